"""Build the FastAPI application of the review service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from review.audit import guard_audit_rows
from review.auth.permissions import Action
from review.auth.sessions import CookieSigner
from review.db.engine import Database
from review.jobs.files import InputMissingError, InputRefusedError, service_roots
from review.jobs.paths import PathRefusedError
from review.queue import DecisionConflictError, ReviewError
from review.settings import ReviewSettings
from review.web.deps import Services
from review.web.guard import LoginRequiredError, check_all_guarded
from review.web.middleware import RequestIdMiddleware
from review.web.routes import admin, auth, changes, jobs
from review.web.routes import review as review_routes
from vision.errors import ConfigError, InputError

HERE = Path(__file__).parent

__all__ = ["Services", "app_from_env", "create_app"]


def create_app(settings: ReviewSettings, db: Database | None = None) -> FastAPI:
    """The review web app for ``settings`` (the database must be migrated already)."""
    guard_audit_rows()
    app = FastAPI(
        title="vision review",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["Action"] = Action
    app.state.services = Services(
        settings=settings,
        db=db or Database(settings.db_url),
        signer=CookieSigner(settings.secret_key, settings.session_seconds),
        templates=templates,
        roots=service_roots(settings.job_roots, settings.data_dir),
    )
    for module in (auth, jobs, review_routes, changes, admin):
        app.include_router(module.router)
    check_all_guarded(app.routes)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.add_middleware(RequestIdMiddleware)
    _exception_handlers(app)
    return app


def _wants_html(request: Request) -> bool:
    return (
        request.method == "GET"
        and not request.url.path.startswith("/api/")
        and "text/html" in request.headers.get("accept", "")
    )


def _error(request: Request, status: int, message: str) -> Response:
    if _wants_html(request) or (
        request.method == "POST"
        and not request.url.path.startswith("/api/")
        and "text/html" in request.headers.get("accept", "")
    ):
        services: Services = request.app.state.services
        return services.templates.TemplateResponse(
            request,
            "error.html",
            {"status": status, "message": message, "principal": getattr(request.state, "principal", None)},
            status_code=status,
        )
    return JSONResponse({"detail": message}, status_code=status)


def _exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequiredError)
    async def _login(request: Request, _exc: Exception) -> Response:
        if _wants_html(request):
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        return JSONResponse({"detail": "sign in first"}, status_code=401)

    @app.exception_handler(DecisionConflictError)
    async def _conflict(request: Request, exc: Exception) -> Response:
        return _error(request, 409, str(exc))

    # A job file outside the roots (or behind a link) and a missing one: the messages are
    # fixed texts, never the path, so they tell nothing about files outside the roots.
    @app.exception_handler(InputRefusedError)
    async def _refused(request: Request, exc: Exception) -> Response:
        return _error(request, 403, f"not served: {exc}")

    @app.exception_handler(InputMissingError)
    async def _missing(request: Request, exc: Exception) -> Response:
        return _error(request, 404, f"not found: {exc}")

    @app.exception_handler(PathRefusedError)
    async def _path(request: Request, exc: Exception) -> Response:
        return _error(request, 400, f"path refused: {exc}")

    @app.exception_handler(ReviewError)
    @app.exception_handler(ConfigError)
    @app.exception_handler(InputError)
    async def _bad(request: Request, exc: Exception) -> Response:
        return _error(request, 400, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: Any) -> Response:
        assert isinstance(exc, StarletteHTTPException | HTTPException)
        return _error(request, exc.status_code, str(exc.detail))


def app_from_env() -> FastAPI:
    """App factory for ASGI servers: ``uvicorn --factory review.web.app:app_from_env``.

    Reads `ReviewSettings.from_env`, migrates the database and runs the same start-up checks
    as ``vision review serve`` (which also starts a worker; run ``vision review worker``
    beside a server started this way).
    """
    from review.service import open_database, preflight

    settings = ReviewSettings.from_env()
    db = open_database(settings.db_url)
    preflight(settings, db)
    return create_app(settings, db)
