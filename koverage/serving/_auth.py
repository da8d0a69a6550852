"""API-key authentication: `authorization: Bearer <key>` names a tenant."""

import contextvars
import hmac

from koverage.errors import UnauthenticatedError

DEFAULT_TENANT = "default"

_current_tenant: contextvars.ContextVar[str] = contextvars.ContextVar(
    "koverage_tenant", default=DEFAULT_TENANT
)


def current_tenant() -> str:
    """Returns the tenant of the RPC being handled (set by the interceptor)."""
    return _current_tenant.get()


def set_current_tenant(tenant: str) -> contextvars.Token:
    """Sets the tenant for the running task; returns a token to reset it."""
    return _current_tenant.set(tenant)


class ApiKeyAuthenticator:
    """Maps bearer keys to tenants.

    Without `required`, a call with no key runs as the `default` tenant; a call
    with an unknown key is refused either way, so a typo never silently lands
    data in the wrong tenant.
    """

    def __init__(self, key_tenants: dict[str, str], *, required: bool) -> None:
        if required and not key_tenants:
            raise ValueError(
                "auth_required=True needs at least one key in KOVERAGE_API_KEYS"
            )
        self._key_tenants = dict(key_tenants)
        self.required = required

    def tenant_for(self, metadata: object) -> str:
        """Returns the tenant named by the call's metadata.

        Raises:
            UnauthenticatedError: the key is missing (when required) or unknown.
        """
        header = ""
        for key, value in metadata or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode()
                break
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
        return tenant

    def _lookup(self, key: str) -> str | None:
        # Compare every key in constant time so timing reveals nothing.
        found = None
        for known, tenant in self._key_tenants.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                found = tenant
        return found
