"""The service's error answers: one JSON shape, and a generic 500 whose detail only the log sees.

Every error body is ``{"error": code, "detail": message}``. Failures nobody planned for
answer 500 with a reference number; the traceback goes to the ``ferkit.serve`` log under
that reference, never to the client.
"""

from __future__ import annotations

import logging
import uuid

from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders

log = logging.getLogger("ferkit.serve")

_INTERNAL = "internal server error; the server log has the details under reference {ref}"


def error_response(status: int, code: str, detail: str, headers: dict | None = None) -> JSONResponse:
    """The service's one error shape: ``{"error": code, "detail": message}`` with ``status``."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def internal_error(where: str, exc: BaseException | None = None) -> tuple[str, str]:
    """Log an unexpected failure with its traceback; (code, generic detail) for the client."""
    ref = uuid.uuid4().hex[:12]
    log.error("internal error %s in %s", ref, where, exc_info=exc)
    return "internal_error", _INTERNAL.format(ref=ref)


class Guard:
    """Outermost-but-one ASGI layer: ``X-Content-Type-Options: nosniff`` on every response,
    and a generic JSON 500 (detail logged, never sent) for any exception a route lets out."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_nosniff(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)["X-Content-Type-Options"] = "nosniff"
            await send(message)

        try:
            await self.app(scope, receive, send_nosniff)
        except Exception as e:  # the last line of defence (logged, generic answer)
            code, detail = internal_error(f"{scope.get('method')} {scope.get('path')}", e)
            if started:  # too late for a clean answer: let the server close the connection
                raise
            await error_response(500, code, detail, {"X-Content-Type-Options": "nosniff"})(scope, receive, send)
