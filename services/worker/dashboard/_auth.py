"""Signs the browser in: API key -> tenant -> a signed session cookie.

A request names its tenant in one of three ways, checked in this order:
an `Authorization: Bearer <key>` header (scripts), the session cookie (the
browser), or nothing, which is the `default` tenant only when keys are not
required. The cookie holds `tenant.expiry.signature`, an HMAC-SHA256 over
tenant and expiry with a key drawn at start-up, so it never carries the API
key and cannot be forged; restarting the process signs every browser out.
"""

import base64
import hashlib
import hmac
import secrets
import time

from koverage.errors import UnauthenticatedError
from koverage.serving import DEFAULT_TENANT, ApiKeyAuthenticator

COOKIE_NAME = "koverage_dashboard"
"""Name of the session cookie."""

_SESSION_S = 12 * 3600


class DashboardAuth:
    """Turns keys into tenants and tenants into session cookies.

    Args:
        api_keys: {key: tenant}, as `Settings.api_key_tenants()` returns.
        auth_required: Refuse requests that carry no known key or session.
    """

    def __init__(self, api_keys: dict[str, str], *, auth_required: bool) -> None:
        self._keys = ApiKeyAuthenticator(api_keys, required=auth_required)
        self._secret = secrets.token_bytes(32)
        self.required = auth_required

    def tenant_for_key(self, key: str) -> str:
        """Returns the key's tenant.

        Raises:
            UnauthenticatedError: the key is empty or unknown.
        """
        if not key.strip():
            raise UnauthenticatedError("missing API key")
        return self._keys.tenant_for([("authorization", f"Bearer {key.strip()}")])

    def tenant_for_request(self, authorization: str, cookie: str | None) -> str:
        """Returns the request's tenant from its header or session cookie.

        Raises:
            UnauthenticatedError: no usable credential and keys are required,
                or a header names an unknown key.
        """
        if authorization:
            return self._keys.tenant_for([("authorization", authorization)])
        if cookie:
            tenant = self._verify(cookie)
            if tenant is not None:
                return tenant
        if self.required:
            raise UnauthenticatedError(
                "sign in with an API key: open the URL koverage up printed, or "
                "send 'Authorization: Bearer <key>'"
            )
        return DEFAULT_TENANT

    def session_cookie(self, tenant: str, now_s: float | None = None) -> str:
        """A cookie value naming `tenant`, valid for 12 hours."""
        expiry = int((time.time() if now_s is None else now_s) + _SESSION_S)
        encoded = base64.urlsafe_b64encode(tenant.encode()).decode().rstrip("=")
        payload = f"{encoded}.{expiry}"
        return f"{payload}.{self._sign(payload)}"

    @property
    def max_age_s(self) -> int:
        """Lifetime of a session cookie."""
        return _SESSION_S

    def _verify(self, cookie: str, now_s: float | None = None) -> str | None:
        payload, _, signature = cookie.rpartition(".")
        if not payload or not hmac.compare_digest(self._sign(payload), signature):
            return None
        encoded, _, expiry = payload.partition(".")
        try:
            if int(expiry) < (time.time() if now_s is None else now_s):
                return None
            padded = encoded + "=" * (-len(encoded) % 4)
            return base64.urlsafe_b64decode(padded.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            return None

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
