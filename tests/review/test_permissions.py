"""Every route × every role, against the one role table; CSRF on every state change."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.routing import Mount

from review.auth.permissions import ROLE_ACTIONS, ROUTE_ACTIONS, Action, allowed
from review.db.engine import Database
from review.db.models import Item, User
from review.web.guard import GuardedRoute, RouteNotDeclaredError, iter_routes

ROLES = (None, "analyst", "reviewer", "admin")
SAFE = {"GET", "HEAD", "OPTIONS"}


def api_routes(app: Any) -> list[GuardedRoute]:
    """Every endpoint route of the app (static files are a mount, public by design)."""
    out = []
    for r in iter_routes(app.routes):
        if isinstance(r, APIRoute):
            assert isinstance(r, GuardedRoute), f"{r.path} is not guarded"
            out.append(r)
        else:
            assert isinstance(r, Mount) and r.path == "/static", r
    return out


def test_every_route_has_an_action_and_every_action_a_route(app_client: TestClient) -> None:
    routes = api_routes(app_client.app)
    names = {r.name for r in routes}
    assert names == set(ROUTE_ACTIONS), "ROUTE_ACTIONS and the app's routes disagree"
    for r in routes:
        assert r.action is ROUTE_ACTIONS[r.name]
    assert set(ROLE_ACTIONS) == set(Action) - {Action.PUBLIC}


def test_a_route_without_an_entry_cannot_be_added() -> None:
    router = APIRouter(route_class=GuardedRoute)

    def brand_new_thing() -> dict[str, str]:
        return {}

    with pytest.raises(RouteNotDeclaredError):
        router.add_api_route("/new", brand_new_thing)


def _path(route: APIRoute, ids: dict[str, int]) -> str:
    return route.path.format(**ids)


@pytest.fixture
def clients(app_client: TestClient, client_for: Any, job_id: int) -> dict[str | None, tuple[TestClient, str]]:
    return {
        None: (app_client, ""),
        "analyst": client_for("ana"),
        "reviewer": client_for("rev"),
        "admin": client_for("adm"),
    }


def test_route_role_matrix(clients: dict[str | None, tuple[TestClient, str]], db: Database, job_id: int) -> None:
    with db.read() as s:
        item_id = s.execute(select(Item.id).where(Item.job_id == job_id).limit(1)).scalar_one()
        user_id = s.execute(select(User.id).where(User.name == "rev2")).scalar_one()
    ids = {"job_id": job_id, "item_id": item_id, "user_id": user_id, "fmt": "geojson", "date": "after"}
    routes = sorted(api_routes(clients[None][0].app), key=lambda r: r.name == "logout")  # logout last
    checked = 0
    for route in routes:
        for method in sorted(route.methods - {"HEAD"}):
            for role in ROLES:
                client, csrf = clients[role]
                path = _path(route, ids)
                for accept in ("text/html", "application/json"):
                    r = client.request(
                        method, path, headers={"X-CSRF-Token": csrf, "Accept": accept}, follow_redirects=False
                    )
                    where = f"{method} {path} as {role or 'anonymous'} ({accept}): {r.status_code}"
                    if route.action is Action.PUBLIC:
                        assert r.status_code not in (303, 401) or route.name == "login", where
                    elif role is None:
                        if method == "GET" and accept == "text/html" and not path.startswith("/api/"):
                            assert r.status_code == 303, where
                            assert r.headers["location"].startswith("/login"), where
                        else:
                            assert r.status_code == 401, where
                    elif allowed(role, route.action):
                        assert r.status_code not in (401, 403), where
                    else:
                        assert r.status_code == 403, where
                    checked += 1
                    if route.name == "logout" and role is not None:
                        break
    assert checked >= len(routes) * len(ROLES)


def test_state_changes_need_the_csrf_token(clients: dict[str | None, tuple[TestClient, str]]) -> None:
    admin, csrf = clients["admin"]
    unsafe = [r for r in api_routes(admin.app) if r.methods - SAFE and r.name != "login"]
    assert unsafe
    for route in unsafe:
        path = route.path.format(job_id=1, item_id=1, user_id=1, fmt="geojson")
        for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": csrf + "x"}):
            r = admin.post(path, headers=headers, data={"csrf_token": "nope"}, follow_redirects=False)
            assert r.status_code == 403, (path, headers, r.status_code)
            assert "CSRF" in r.text
    # the admin is still signed in: the refused logout did nothing
    assert admin.get("/", follow_redirects=False).status_code == 200


def test_login_form_needs_its_csrf_token(app_client: TestClient, users: dict[str, str]) -> None:
    r = app_client.post(
        "/login", data={"username": "adm", "password": "correct-horse-battery-staple"}, follow_redirects=False
    )
    assert r.status_code == 403


def test_reviewer_cannot_manage_users(clients: dict[str | None, tuple[TestClient, str]], db: Database) -> None:
    rev, csrf = clients["reviewer"]
    r = rev.post(
        "/admin/users",
        data={"csrf_token": csrf, "name": "mallory", "role": "admin", "password": "another-long-passphrase"},
        follow_redirects=False,
    )
    assert r.status_code == 403
    assert rev.get("/admin/users").status_code == 403
    with db.read() as s:
        assert s.execute(select(User).where(User.name == "mallory")).first() is None
    admin, admin_csrf = clients["admin"]
    r = admin.post(
        "/admin/users",
        data={"csrf_token": admin_csrf, "name": "mallory", "role": "analyst", "password": "another-long-passphrase"},
        follow_redirects=False,
    )
    assert r.status_code == 303


def test_anonymous_only_reaches_login_and_health(app_client: TestClient) -> None:
    assert app_client.get("/health").json() == {"status": "ok"}
    assert app_client.get("/login").status_code == 200
    r = app_client.get("/", headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert app_client.post("/api/jobs/1/claim").status_code == 401
