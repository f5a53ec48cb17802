"""FastAPI service (``pip install 'intentkit-router[server]'``); never imported by the package root."""

from .app import ChatRequest, RouteRequest, create_app

__all__ = ["ChatRequest", "RouteRequest", "create_app"]
