"""The live web dashboard for Beacon and Underwriter, served by the worker."""

from services.worker.dashboard._auth import COOKIE_NAME, DashboardAuth
from services.worker.dashboard._queries import WINDOWS, DashboardQueries, Window
from services.worker.dashboard._server import (
    DashboardServer,
    dashboard_url,
    start_dashboard,
)

__all__ = [
    "COOKIE_NAME",
    "WINDOWS",
    "DashboardAuth",
    "DashboardQueries",
    "DashboardServer",
    "Window",
    "dashboard_url",
    "start_dashboard",
]
