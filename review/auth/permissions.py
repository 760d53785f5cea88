"""Who may do what: the one table of role × action, and the action of every route.

`ROLE_ACTIONS` is the policy. `ROUTE_ACTIONS` names, for every route of the web app (by
route name), the action it performs; `review.web.guard.GuardedRoute` refuses to build a
route that has no entry, and checks every request against the table before the endpoint
runs. A test walks ``app.routes`` and tries each one with each role.
"""

from __future__ import annotations

from enum import StrEnum

from review.db.models import ROLES


class Action(StrEnum):
    """Things a signed-in person can do (plus `PUBLIC` and `SIGNED_IN` for the rest)."""

    PUBLIC = "public"
    SIGNED_IN = "signed in"
    VIEW_JOB = "view job"
    SUBMIT_JOB = "submit job"
    REVIEW = "review"
    OVERRIDE_REVIEW = "override a review"
    EXPORT_RESULTS = "export confirmed results"
    MANAGE_USERS = "manage users"
    READ_AUDIT = "read audit log"


#: The policy: which roles may perform each action.
ROLE_ACTIONS: dict[Action, frozenset[str]] = {
    Action.VIEW_JOB: frozenset({"analyst", "reviewer", "admin"}),
    Action.SUBMIT_JOB: frozenset({"analyst", "admin"}),
    Action.REVIEW: frozenset({"reviewer", "admin"}),
    Action.OVERRIDE_REVIEW: frozenset({"admin"}),
    Action.EXPORT_RESULTS: frozenset({"analyst", "admin"}),
    Action.MANAGE_USERS: frozenset({"admin"}),
    Action.READ_AUDIT: frozenset({"admin"}),
    Action.SIGNED_IN: frozenset(ROLES),
}

#: The action of every route, by route name (the endpoint function's name).
ROUTE_ACTIONS: dict[str, Action] = {
    "health": Action.PUBLIC,
    "login_form": Action.PUBLIC,
    "login": Action.PUBLIC,
    "logout": Action.SIGNED_IN,
    "home": Action.VIEW_JOB,
    "job_page": Action.VIEW_JOB,
    "job_status": Action.VIEW_JOB,
    "item_page": Action.VIEW_JOB,
    "item_chip": Action.VIEW_JOB,
    "item_overview": Action.VIEW_JOB,
    "item_heatmap": Action.VIEW_JOB,
    "change_picture": Action.VIEW_JOB,
    "change_heatmap": Action.VIEW_JOB,
    "new_job_form": Action.SUBMIT_JOB,
    "submit_job": Action.SUBMIT_JOB,
    "import_job": Action.SUBMIT_JOB,
    "job_settings": Action.SUBMIT_JOB,
    "review_page": Action.REVIEW,
    "claim_item": Action.REVIEW,
    "release_item": Action.REVIEW,
    "skip_item": Action.REVIEW,
    "undo_decision": Action.REVIEW,
    "decide_item": Action.REVIEW,
    "override_item": Action.OVERRIDE_REVIEW,
    "export_results": Action.EXPORT_RESULTS,
    "users_page": Action.MANAGE_USERS,
    "add_user": Action.MANAGE_USERS,
    "update_user": Action.MANAGE_USERS,
    "audit_page": Action.READ_AUDIT,
}


def allowed(role: str | None, action: Action) -> bool:
    """Whether ``role`` (``None`` for anonymous) may perform ``action``."""
    if action is Action.PUBLIC:
        return True
    if role is None:
        return False
    return role in ROLE_ACTIONS.get(action, frozenset())
