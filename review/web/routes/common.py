"""Helpers shared by the routers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from review.web.deps import Services, get_services
from review.web.guard import GuardedRoute

#: FastAPI dependency: the service objects (`review.web.deps.ServicesDep` is the alias).
services = get_services


def make_router() -> APIRouter:
    """A router whose every route is guarded by the role table."""
    return APIRouter(route_class=GuardedRoute)


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a page with the signed-in person and their CSRF token in the context."""
    svc: Services = request.app.state.services
    p = getattr(request.state, "principal", None)
    ctx = {"principal": p, "csrf_token": p.csrf_token if p else "", **context}
    return svc.templates.TemplateResponse(request, template, ctx, status_code=status_code)


def split_classes(text: str | None) -> list[str]:
    """``"crop, forest"`` → ``["crop", "forest"]``."""
    return [c.strip() for c in (text or "").split(",") if c.strip()]
