"""Request ids and security headers, as plain ASGI middleware (no per-request task).

``Strict-Transport-Security`` is sent on HTTPS requests (``vision review serve --tls-cert``)
and, behind a TLS-terminating reverse proxy, whenever the service marks its cookies
``Secure`` (``VISION_REVIEW_SECURE_COOKIES=1``): both mean browsers must only use HTTPS.
"""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_VALID_ID = re.compile(r"^[A-Za-z0-9-]{8,64}$")

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "script-src 'self'; style-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

#: Browsers remember for a year that this site is HTTPS-only.
HSTS = "max-age=31536000"


def _https(scope: Scope) -> bool:
    if scope.get("scheme") == "https":
        return True
    services = getattr(getattr(scope.get("app"), "state", None), "services", None)
    return bool(getattr(getattr(services, "settings", None), "secure_cookies", False))


class RequestIdMiddleware:
    """Give each request an id (``request.state.request_id``, ``X-Request-ID`` header).

    A well-formed incoming ``X-Request-ID`` (from a proxy) is kept, so logs line up.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        https = _https(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = rid
                for k, v in SECURITY_HEADERS.items():
                    headers.setdefault(k, v)
                headers.setdefault("Cache-Control", "no-store")
                if https:
                    headers.setdefault("Strict-Transport-Security", HSTS)
            await send(message)

        await self.app(scope, receive, send_with_headers)
