"""The HTTP server edge: the Starlette app, its routes, auth, OpenAPI and the dashboard."""

from __future__ import annotations

from ai_usage_exporter.server.app import create_app

__all__ = ("create_app",)
