"""API-key authentication: `authorization: Bearer <key>` names a tenant.

A mesh service that calls another on behalf of its own caller (chat calling
the router) authenticates with its own key and names the caller's tenant in
`koverage-on-behalf-of`. The callee honours that header only from keys whose
tenant is configured as a relay (`KOVERAGE_RELAY_TENANTS`); from any other
key it is ignored, so a client cannot claim another tenant.
"""

import contextvars
import hmac
import re

from koverage.errors import InvalidArgumentError, UnauthenticatedError

DEFAULT_TENANT = "default"
ON_BEHALF_OF_HEADER = "koverage-on-behalf-of"

_TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

# Unset outside an RPC, so an outgoing call can tell whether it is made on
# behalf of a caller (see `caller_tenant`).
_current_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("koverage_tenant")


def current_tenant() -> str:
    """Returns the tenant of the RPC being handled (set by the interceptor),
    or the default tenant outside an RPC."""
    return _current_tenant.get(DEFAULT_TENANT)


def caller_tenant() -> str | None:
    """Returns the tenant of the RPC this task serves, None outside an RPC."""
    return _current_tenant.get(None)


def set_current_tenant(tenant: str) -> contextvars.Token:
    """Sets the tenant for the running task; returns a token to reset it."""
    return _current_tenant.set(tenant)


class ApiKeyAuthenticator:
    """Maps bearer keys to tenants.

    Without `required`, a call with no key runs as the `default` tenant; a call
    with an unknown key is refused either way, so a typo never silently lands
    data in the wrong tenant.
    """

    def __init__(
        self,
        key_tenants: dict[str, str],
        *,
        required: bool,
        relay_tenants: frozenset[str] = frozenset(),
    ) -> None:
        if required and not key_tenants:
            raise ValueError(
                "auth_required=True needs at least one key in KOVERAGE_API_KEYS"
            )
        self._key_tenants = dict(key_tenants)
        self._relay_tenants = frozenset(relay_tenants)
        self.required = required

    def tenant_for(self, metadata: object) -> str:
        """Returns the tenant named by the call's metadata.

        A key whose tenant is a relay may name another tenant in
        `koverage-on-behalf-of`; the call then runs as that tenant.

        Raises:
            UnauthenticatedError: the key is missing (when required) or unknown.
            InvalidArgumentError: a relay named a malformed tenant.
        """
        header = ""
        on_behalf_of = ""
        for key, value in metadata or ():
            if key == "authorization" and not header:
                header = value if isinstance(value, str) else value.decode()
            elif key == ON_BEHALF_OF_HEADER and not on_behalf_of:
                on_behalf_of = value if isinstance(value, str) else value.decode()
        if not header:
            if self.required:
                raise UnauthenticatedError(
                    "missing API key: send metadata 'authorization: Bearer <key>'"
                )
            return DEFAULT_TENANT

        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise UnauthenticatedError(
                "malformed authorization header: expected 'Bearer <key>'"
            )
        tenant = self._lookup(key.strip())
        if tenant is None:
            raise UnauthenticatedError("unknown API key")
        if not on_behalf_of or tenant not in self._relay_tenants:
            return tenant
        if not _TENANT_NAME.fullmatch(on_behalf_of):
            raise InvalidArgumentError(
                f"{ON_BEHALF_OF_HEADER} must be a tenant name of 1-128 letters, "
                "digits, '.', '_' or '-'"
            )
        return on_behalf_of

    def _lookup(self, key: str) -> str | None:
        # Compare every key in constant time so timing reveals nothing.
        found = None
        for known, tenant in self._key_tenants.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                found = tenant
        return found
