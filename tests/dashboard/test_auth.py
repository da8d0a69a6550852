"""Session cookies: signed, expiring, never carrying the key."""

import pytest

from koverage.errors import UnauthenticatedError
from services.worker.dashboard import DashboardAuth


def test_a_session_cookie_names_the_keys_tenant_and_not_the_key():
    auth = DashboardAuth({"secret-key": "acme"}, auth_required=True)
    cookie = auth.session_cookie(auth.tenant_for_key("secret-key"))
    assert "secret-key" not in cookie
    assert auth.tenant_for_request("", cookie) == "acme"


def test_a_forged_or_expired_cookie_is_refused():
    auth = DashboardAuth({"k": "acme"}, auth_required=True)
    other = DashboardAuth({"k": "acme"}, auth_required=True)
    forged = other.session_cookie("acme")  # signed with another secret
    expired = auth.session_cookie("acme", now_s=0)
    tampered = auth.session_cookie("acme").replace("YWNtZQ", "b3RoZXI", 1)
    for cookie in (forged, expired, tampered, "garbage", "a.b.c"):
        with pytest.raises(UnauthenticatedError):
            auth.tenant_for_request("", cookie)


def test_unknown_keys_are_refused_even_when_keys_are_optional():
    auth = DashboardAuth({"k": "acme"}, auth_required=False)
    assert auth.tenant_for_request("", None) == "default"
    with pytest.raises(UnauthenticatedError):
        auth.tenant_for_key("wrong")
    with pytest.raises(UnauthenticatedError):
        auth.tenant_for_request("Bearer wrong", None)
