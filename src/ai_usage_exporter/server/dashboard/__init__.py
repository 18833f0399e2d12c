"""The dashboard: a page served from files inside the package, and the status it polls."""

from __future__ import annotations

from ai_usage_exporter.server.dashboard.routes import dashboard_routes, status_view

__all__ = ["dashboard_routes", "status_view"]
