"""Every request is checked against the role table before its endpoint runs.

`GuardedRoute` is the route class of every router in the app. Building one for a route
whose name has no entry in `review.auth.permissions.ROUTE_ACTIONS` fails, so a new route
cannot be added without declaring its action. On each request it

1. loads the signed-in person from the session cookie (anonymous: 401, or a redirect to the
   login page for page views),
2. checks their role against `ROLE_ACTIONS` for the route's action (403 otherwise),
3. for state-changing methods, requires the session's CSRF token in the ``X-CSRF-Token``
   header or the ``csrf_token`` form field (403 otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from review.auth.permissions import ROUTE_ACTIONS, Action, allowed
from review.auth.sessions import SESSION_COOKIE, csrf_matches, load_session
from review.db.models import utcnow
from vision.errors import VisionError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


class RouteNotDeclaredError(VisionError, LookupError):
    """A route was added without an entry in ``ROUTE_ACTIONS``."""


class LoginRequiredError(VisionError):
    """The request needs a signed-in person and has none."""


@dataclass(frozen=True)
class Principal:
    """The signed-in person of a request."""

    user_id: int
    name: str
    role: str
    session_id: str
    csrf_token: str

    @property
    def id(self) -> int:
        """The user's id (so a principal can act where a `User` is expected)."""
        return self.user_id

    def may(self, action: Action | str) -> bool:
        """Whether this person may perform ``action``."""
        return allowed(self.role, Action(action))


class GuardedRoute(APIRoute):
    """An `APIRoute` that enforces its declared action (see the module docstring)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any):
        name = kwargs.get("name") or endpoint.__name__
        if name not in ROUTE_ACTIONS:
            raise RouteNotDeclaredError(
                f"route {name!r} ({path}) has no action in review.auth.permissions.ROUTE_ACTIONS"
            )
        self.action: Action = ROUTE_ACTIONS[name]
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()
        action = self.action

        async def guarded(request: Request) -> Response:
            await authorize(request, action)
            return await inner(request)

        return guarded


async def authorize(request: Request, action: Action) -> None:
    """Authenticate, authorise and CSRF-check one request (see the module docstring).

    Raises:
        LoginRequiredError: nobody is signed in.
        HTTPException: 403 for a role without the action or a missing/wrong CSRF token.
    """
    request.state.principal = None
    if action is Action.PUBLIC:
        return
    services = request.app.state.services
    token = services.signer.unsign(request.cookies.get(SESSION_COOKIE))
    if token is None:
        raise LoginRequiredError()
    principal = await run_in_threadpool(_load_principal, services, token)
    if principal is None:
        raise LoginRequiredError()
    request.state.principal = principal
    if not allowed(principal.role, action):
        raise HTTPException(403, f"your role ({principal.role}) may not {action.value}")
    if request.method not in SAFE_METHODS:
        given = request.headers.get(CSRF_HEADER)
        ctype = request.headers.get("content-type", "")
        if given is None and ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            given = value if isinstance(value, str) else None
        if not csrf_matches(principal.csrf_token, given):
            raise HTTPException(403, "CSRF token missing or wrong: reload the page and retry")


def _load_principal(services: Any, token: str) -> Principal | None:
    with services.db.read() as s:
        found = load_session(s, token, utcnow())
        if found is None:
            return None
        sess, user = found
        return Principal(user.id, user.name, user.role, sess.id, sess.csrf_token)


def principal(request: Request) -> Principal:
    """FastAPI dependency: the signed-in person (set by the guard)."""
    p = getattr(request.state, "principal", None)
    if p is None:
        raise LoginRequiredError()
    return p


def request_id(request: Request) -> str:
    """FastAPI dependency: this request's id (set by `RequestIdMiddleware`)."""
    return str(getattr(request.state, "request_id", "-"))


def iter_routes(routes: list[Any]) -> list[Any]:
    """Every route under ``routes``, looking inside included routers."""
    out: list[Any] = []
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            out.extend(iter_routes(list(inner.routes)))
        else:
            out.append(r)
    return out


def check_all_guarded(routes: list[Any]) -> list[GuardedRoute]:
    """The app's endpoint routes, all of them `GuardedRoute`s.

    Raises:
        RouteNotDeclaredError: an endpoint route bypasses the guard.
    """
    guarded: list[GuardedRoute] = []
    for r in iter_routes(routes):
        if isinstance(r, GuardedRoute):
            guarded.append(r)
        elif isinstance(r, APIRoute):
            raise RouteNotDeclaredError(f"route {r.path} is not a GuardedRoute")
    return guarded
