"""The dashboard's HTTP server: static page, sign-in and a JSON API (aiohttp).

Routes:
    GET  /                       the page, or the key form (401) when signed out;
                                 `?token=<key>` signs in and redirects to `/`
    POST /login                  the key form posts here
    GET  /logout                 clears the session cookie
    GET  /static/...             vendored and own assets (no data, no auth)
    GET  /healthz                liveness, no auth
    GET  /api/session            tenant, windows, options for the page
    GET  /api/overview           ?window=15m|1h|24h|7d (&tenant= when keys are optional)
    GET  /api/conversations      ?window=
    GET  /api/conversations/{id} the conversation's waterfall
    GET  /api/runs               evaluation runs with scorecard summaries
    GET  /api/runs/{id}/report.pdf
    GET  /api/models/history     ?model= the model's index across runs

Every `/api` route answers 401 without a key header or session cookie when
keys are required. The page renders every value with `textContent`, and the
Content-Security-Policy allows scripts from this origin only, so user text
in a preview can never run.
"""

import asyncio
import dataclasses
import datetime
import html
import logging
import pathlib
from collections.abc import Sequence

import aiohttp
import psycopg
from aiohttp import web

from koverage.db import open_async_pool
from koverage.errors import (
    InvalidArgumentError,
    KoverageError,
    NotFoundError,
    UnauthenticatedError,
    UnavailableError,
)
from koverage.settings import Settings
from services.worker.dashboard._auth import COOKIE_NAME, DashboardAuth
from services.worker.dashboard._drops import collect_drops
from services.worker.dashboard._queries import WINDOWS, DashboardQueries

_STATIC_DIR = pathlib.Path(__file__).parent / "static"
_DEFAULT_WINDOW = "15m"
_REFRESH_S = 5
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # The sign-in URL carries the key: never send it on as a referrer.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_STATUS_BY_ERROR: dict[type[KoverageError], int] = {
    UnauthenticatedError: 401,
    InvalidArgumentError: 400,
    NotFoundError: 404,
    UnavailableError: 503,
}

logger = logging.getLogger(__name__)

_AUTH_KEY = web.AppKey("auth", DashboardAuth)
_QUERIES_KEY = web.AppKey("queries", DashboardQueries)
_OPTIONS_KEY = web.AppKey("options", dict)
_SESSION_KEY = web.AppKey("client_session", aiohttp.ClientSession)


@dataclasses.dataclass
class DashboardServer:
    """A running dashboard; `await stop()` closes the site and the pool."""

    host: str
    port: int
    _runner: web.AppRunner
    _stop_callbacks: list

    @property
    def url(self) -> str:
        """The page's URL, without a sign-in token."""
        return dashboard_url(f"{self.host}:{self.port}")

    def sign_in_url(self, api_key: str) -> str:
        """The URL that signs a browser in with `api_key` (print it, like a
        notebook server's token URL)."""
        return dashboard_url(f"{self.host}:{self.port}", api_key)

    async def stop(self) -> None:
        """Stops serving, then closes the HTTP client session and the pool."""
        await self._runner.cleanup()
        for callback in self._stop_callbacks:
            await callback()
        self._stop_callbacks = []
        logger.info("dashboard stopped", extra={"port": self.port})


def dashboard_url(address: str, api_key: str = "") -> str:
    """`http://host:port/`, with `?token=<key>` when a key is given."""
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    url = f"http://{host}:{port}/"
    if api_key:
        url += "?token=" + aiohttp.helpers.quote(api_key, safe="")
    return url


async def start_dashboard(
    settings: Settings,
    database_url: str,
    *,
    host: str | None = None,
    port: int | None = None,
    api_keys: dict[str, str],
    auth_required: bool,
    metrics_urls: Sequence[str] = (),
    trace_url_template: str = "",
) -> DashboardServer:
    """Opens a pool on `database_url` and serves the dashboard.

    Args:
        settings: Supplies `dashboard_address` when host or port is None.
        database_url: The database holding `spans` and `llm_calls` (and
            `underwriter_runs` when the underwriter shares it).
        host: Interface to bind; None takes it from `dashboard_address`.
        port: Port to bind (0 picks a free one); None takes it from
            `dashboard_address`.
        api_keys: {key: tenant} accepted for sign-in.
        auth_required: Refuse every data request without a known key.
        metrics_urls: Prometheus `/metrics` URLs of the other services, scraped
            for dropped and rejected span counters (not this process's own:
            its counters are read in process).
        trace_url_template: A Jaeger or Tempo URL with `{trace_id}`, such as
            `http://localhost:16686/trace/{trace_id}`; empty shows the id only.

    Returns:
        The running server.

    Raises:
        ValueError: an argument is invalid (auth required without keys, a
            template without `{trace_id}`, an unparsable address).
        OSError: the port cannot be bound.
    """
    if host is None or port is None:
        default_host, default_port = _split_address(settings.dashboard_address)
        host = default_host if host is None else host
        port = default_port if port is None else port
    if trace_url_template and "{trace_id}" not in trace_url_template:
        raise ValueError(
            f"trace_url_template={trace_url_template!r} must contain {{trace_id}}"
        )
    auth = DashboardAuth(api_keys, auth_required=auth_required)

    pool = await open_async_pool(database_url, min_size=1, max_size=4, name="dashboard")
    client_session = aiohttp.ClientSession()
    app = _build_app(
        auth,
        DashboardQueries(pool),
        client_session,
        {"metrics_urls": list(metrics_urls), "trace_url_template": trace_url_template},
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        await client_session.close()
        await pool.close()
        raise

    bound_port = runner.addresses[0][1]
    server = DashboardServer(
        host, bound_port, runner, [client_session.close, pool.close]
    )
    logger.info(
        "dashboard listening",
        extra={"url": server.url, "auth_required": auth_required},
    )
    return server


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"dashboard_address={address!r} is not host:port")
    return host.strip("[]"), int(port)


def _build_app(
    auth: DashboardAuth,
    queries: DashboardQueries,
    client_session: aiohttp.ClientSession,
    options: dict,
) -> web.Application:
    app = web.Application(middlewares=[_headers_middleware, _errors_middleware])
    app[_AUTH_KEY] = auth
    app[_QUERIES_KEY] = queries
    app[_OPTIONS_KEY] = options
    app[_SESSION_KEY] = client_session
    app.router.add_get("/", _index)
    app.router.add_post("/login", _login)
    app.router.add_get("/logout", _logout)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/api/session", _session)
    app.router.add_get("/api/overview", _overview)
    app.router.add_get("/api/conversations", _conversations)
    app.router.add_get("/api/conversations/{conversation_id}", _waterfall)
    app.router.add_get("/api/runs", _runs)
    app.router.add_get("/api/runs/{run_id}/report.pdf", _report)
    app.router.add_get("/api/models/history", _model_history)
    app.router.add_static("/static/", _STATIC_DIR, follow_symlinks=False)
    return app


# -- middleware ---------------------------------------------------------------


@web.middleware
async def _headers_middleware(request: web.Request, handler):
    response = await handler(request)
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@web.middleware
async def _errors_middleware(request: web.Request, handler):
    # Translate our errors once, here: JSON for /api, plain text otherwise.
    try:
        return await handler(request)
    except KoverageError as exc:
        status = next(
            (s for cls, s in _STATUS_BY_ERROR.items() if isinstance(exc, cls)), 500
        )
        if status == 500:
            logger.exception("dashboard request failed", extra={"path": request.path})
        return web.json_response({"error": str(exc)}, status=status)
    except psycopg.OperationalError as exc:
        logger.warning("dashboard database unavailable: %s", exc)
        return web.json_response(
            {"error": "the telemetry database is unavailable; retry shortly"},
            status=503,
        )


# -- pages and sign-in ----------------------------------------------------------


async def _index(request: web.Request) -> web.StreamResponse:
    auth = request.app[_AUTH_KEY]
    token = request.query.get("token")
    if token is not None:
        return _sign_in(auth, token)
    try:
        _tenant(request)
    except UnauthenticatedError:
        return _login_page(status=401)
    return web.FileResponse(_STATIC_DIR / "index.html")


async def _login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    key = form.get("key", "")
    return _sign_in(request.app[_AUTH_KEY], key if isinstance(key, str) else "")


async def _logout(request: web.Request) -> web.StreamResponse:
    response = _see_other("/")
    response.del_cookie(COOKIE_NAME, path="/")
    return response


async def _healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


def _sign_in(auth: DashboardAuth, key: str) -> web.StreamResponse:
    try:
        tenant = auth.tenant_for_key(key)
    except UnauthenticatedError:
        return _login_page(status=401, message="That key was not accepted.")
    # Redirect to the clean URL so the key leaves the address bar and history.
    response = _see_other("/")
    response.set_cookie(
        COOKIE_NAME,
        auth.session_cookie(tenant),
        max_age=auth.max_age_s,
        path="/",
        httponly=True,
        samesite="Strict",
    )
    return response


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _login_page(*, status: int, message: str = "") -> web.Response:
    template = (_STATIC_DIR / "login.html").read_text()
    body = template.replace("{{message}}", html.escape(message))
    return web.Response(text=body, status=status, content_type="text/html")


# -- JSON API -------------------------------------------------------------------


async def _session(request: web.Request) -> web.StreamResponse:
    tenant = _tenant(request)
    auth = request.app[_AUTH_KEY]
    queries = request.app[_QUERIES_KEY]
    tenants = [] if auth.required else await queries.tenants()
    return web.json_response(
        {
            "tenant": tenant,
            "auth_required": auth.required,
            "tenants": tenants,
            "windows": list(WINDOWS),
            "default_window": _DEFAULT_WINDOW,
            "refresh_s": _REFRESH_S,
            "trace_url_template": request.app[_OPTIONS_KEY]["trace_url_template"],
        }
    )


async def _overview(request: web.Request) -> web.StreamResponse:
    tenant = _tenant(request)
    queries = request.app[_QUERIES_KEY]
    options = request.app[_OPTIONS_KEY]
    overview, drops = await asyncio.gather(
        queries.overview(tenant, _window(request), _now()),
        collect_drops(request.app[_SESSION_KEY], options["metrics_urls"], tenant),
    )
    overview["drops"] = drops
    return web.json_response(overview)


async def _conversations(request: web.Request) -> web.StreamResponse:
    tenant = _tenant(request)
    window = _window(request)
    rows = await request.app[_QUERIES_KEY].conversations(tenant, window, _now())
    return web.json_response({"window": window.name, "conversations": rows})


async def _waterfall(request: web.Request) -> web.StreamResponse:
    tenant = _tenant(request)
    conversation_id = request.match_info["conversation_id"]
    return web.json_response(
        await request.app[_QUERIES_KEY].waterfall(tenant, conversation_id)
    )


async def _runs(request: web.Request) -> web.StreamResponse:
    tenant = _tenant(request)
    queries = request.app[_QUERIES_KEY]
    return web.json_response(
        {
            "available": await queries.evaluation_available(),
            "runs": await queries.runs(tenant),
            "models": await queries.evaluated_models(tenant),
        }
    )


async def _report(request: web.Request) -> web.StreamResponse:
    tenant = _tenant(request)
    run_id = request.match_info["run_id"]
    pdf = await request.app[_QUERIES_KEY].report_pdf(tenant, run_id)
    return web.Response(
        body=pdf,
        content_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="koverage-{run_id}.pdf"'},
    )


async def _model_history(request: web.Request) -> web.StreamResponse:
    tenant = _tenant(request)
    model = request.query.get("model", "")
    if not model:
        raise InvalidArgumentError("give ?model=<catalog model id>", field="model")
    points = await request.app[_QUERIES_KEY].model_history(tenant, model)
    return web.json_response({"model": model, "points": points})


def _tenant(request: web.Request) -> str:
    """The request's tenant; raises UnauthenticatedError (-> 401)."""
    auth = request.app[_AUTH_KEY]
    authorization = request.headers.get("Authorization", "")
    cookie = request.cookies.get(COOKIE_NAME)
    tenant = auth.tenant_for_request(authorization, cookie)

    # With keys optional, an anonymous viewer may pick any tenant: nothing is
    # protected in that mode anyway.
    chosen = request.query.get("tenant", "")
    if chosen and not auth.required and not authorization and not cookie:
        return chosen
    return tenant


def _window(request: web.Request):
    name = request.query.get("window", _DEFAULT_WINDOW)
    window = WINDOWS.get(name)
    if window is None:
        raise InvalidArgumentError(
            f"window={name[:20]!r} is not one of {', '.join(WINDOWS)}", field="window"
        )
    return window


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
