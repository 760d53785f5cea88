"""Helpers shared by the routers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from review.web.deps import Services, get_services
from review.web.guard import GuardedRoute

#: FastAPI dependency: the service objects (`review.web.deps.ServicesDep` is the alias).
services = get_services

#: How long a browser may keep an item's picture.
IMAGE_CACHE = "private, max-age=600"


def make_router() -> APIRouter:
    """A router whose every route is guarded by the role table."""
    return APIRouter(route_class=GuardedRoute)


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a page with the signed-in person and their CSRF token in the context."""
    svc: Services = request.app.state.services
    p = getattr(request.state, "principal", None)
    ctx = {"principal": p, "csrf_token": p.csrf_token if p else "", **context}
    return svc.templates.TemplateResponse(request, template, ctx, status_code=status_code)


def png(data: bytes) -> Response:
    """A PNG picture of an item, cached by the browser for a while (they do not change)."""
    return Response(data, media_type="image/png", headers={"Cache-Control": IMAGE_CACHE})


def split_classes(text: str | None) -> list[str]:
    """``"crop, forest"`` → ``["crop", "forest"]``."""
    return [c.strip() for c in (text or "").split(",") if c.strip()]
