"""The ASGI middlewares of the app and the access control they enforce, outermost first.

- ``BodySizeLimitMiddleware``: 413 for bodies over the upload limit, declared or sent;
- ``SecurityHeadersMiddleware``: no-sniff, no-referrer, CSP and no-store headers;
- ``AuthMiddleware``: 401 / 403 / 429 from ``AccessControl`` (tokens, sessions, rate
  limits; every denial with a credential goes to the audit log).

All are pure ASGI (no BaseHTTPMiddleware) so the body limit's 413 reaches the client.
"""

from __future__ import annotations

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from fetometry.serve import auth
from fetometry.serve.audit import AuditLog
from fetometry.serve.errors import ApiError, _error_response, _too_large
from fetometry.serve.settings import MIB, ServeSettings

#: An oversized body is read and discarded (so the client gets the 413) up to this much.
DRAIN_LIMIT_BYTES = 256 * MIB
#: Content Security Policy of the page: everything from this server, images also inline.
PAGE_CSP = "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
#: Paths open without a token: liveness, the page's own (public) files and the login itself.
OPEN_PATHS = frozenset({"/health", "/api/health", "/", "/favicon.ico"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# ------------------------------------------------------------------- body size limit


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so that FastAPI's form parsing lets it through."""

    def __init__(self, size_bytes: int | None):
        super().__init__(status_code=413, detail="request body too large")
        self.size_bytes = size_bytes


class BodySizeLimitMiddleware:
    """413 for request bodies over ``limit_bytes``, declared or actually sent (ASGI).

    Written out (rather than Starlette's own limiter) so that the rest of the body is
    drained before answering: a client still busy sending would otherwise see a reset
    connection instead of the reason.
    """

    def __init__(self, app, *, limit_bytes: int, message_limit_bytes: int):
        self.app = app
        self.limit_bytes = limit_bytes
        self.message_limit_bytes = message_limit_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared > self.limit_bytes:
            await _drain(receive, 0)
            return await self._reject(declared, send)
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit_bytes:
                    if message.get("more_body", False):
                        received = await _drain(receive, received)
                    raise _BodyTooLarge(received)
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge as error:  # raised outside FastAPI's handlers
            if started:
                raise
            await self._reject(error.size_bytes, send)

    async def _reject(self, size: int | None, send) -> None:
        error = _too_large(size, self.message_limit_bytes)
        await _send_json(send, error)


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _drain(receive, received: int) -> int:
    """Read and discard the rest of a body (bounded), returning the bytes seen."""
    while received <= DRAIN_LIMIT_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            break
        received += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return received


async def _send_json(send, error: ApiError) -> None:
    response = _error_response(error)
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


# ------------------------------------------------------------------ security headers


class SecurityHeadersMiddleware:
    """Adds no-sniff, no-referrer, CSP (not on the Swagger pages) and no-store on the API (ASGI).

    Pure ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware
    wraps ``receive`` in a task group, which would turn the body limit's 413 into a 400.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
        if not path.startswith(("/docs", "/redoc")):  # Swagger UI loads its own assets
            extra.append((b"content-security-policy", PAGE_CSP.encode()))
        if path.startswith("/api/"):
            extra.append((b"cache-control", b"no-store"))

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message = {
                    **message,
                    "headers": list(message.get("headers", [])) + [h for h in extra if h[0] not in present],
                }
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ------------------------------------------------------------------------ access control


class AccessControl:
    """Tokens, sessions, rate limits (both may be off) and the audit log (always on) of one server."""

    def __init__(self, settings: ServeSettings):
        self.tokens = auth.TokenStore(settings.tokens_file) if settings.tokens_file else None
        self.sessions = auth.SessionStore(settings.session_ttl_s)
        self.limiter = auth.RateLimiter(settings.rate_limit_per_minute) if settings.rate_limit_per_minute else None
        self.audit = AuditLog(settings.audit_path)  # None: in memory

    @property
    def enabled(self) -> bool:
        return self.tokens is not None

    def record(self, actor: str, action: str, **fields) -> None:
        self.audit.append(actor, action, **fields)


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _cookie(scope, name: str) -> str | None:
    from http.cookies import CookieError, SimpleCookie

    raw = _header(scope, b"cookie")
    if not raw:
        return None
    try:
        jar = SimpleCookie(raw)
    except CookieError:
        return None
    return jar[name].value if name in jar else None


def _same_origin(scope) -> bool:
    """False only when a browser says the request comes from another origin (CSRF guard)."""
    from urllib.parse import urlsplit

    origin = _header(scope, b"origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == (_header(scope, b"host") or "")


class AuthMiddleware:
    """401 / 403 / 429 before a route runs; puts ``actor`` and ``admin`` in the request state (ASGI).

    Pure ASGI like the others. Tokens and cookies are read here and nowhere else; neither
    is ever logged or echoed. A denial with a credential (403) is audited, a request
    without one (401) is not (every first page load would be).
    """

    def __init__(self, app, *, access: AccessControl):
        self.app = app
        self.access = access

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        state = scope.setdefault("state", {})
        if path in OPEN_PATHS or path.startswith("/static/") or (path == "/api/login" and method == "POST"):
            return await self.app(scope, receive, send)
        access = self.access
        if not access.enabled:
            state.update(actor=auth.LOCAL_ACTOR, admin=True)
        else:
            denial = await self._authenticate(scope, state)
            if denial is not None:
                return await denial(scope, receive, send)
        if access.limiter is not None:
            wait = access.limiter.take(state["actor"])
            if wait > 0:
                response = JSONResponse(
                    {
                        "detail": f"too many requests; retry in {auth.retry_after_header(wait)} s",
                        "error": "rate_limited",
                    },
                    status_code=429,
                    headers={"Retry-After": auth.retry_after_header(wait)},
                )
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _authenticate(self, scope, state) -> JSONResponse | None:
        access = self.access
        token = auth.bearer_token(_header(scope, b"authorization"))
        if token is not None:
            entry = access.tokens.lookup(token)
            if entry is None or not entry.active:
                reason = "unknown token" if entry is None else "revoked token"
                await run_in_threadpool(
                    access.record,
                    entry.name if entry is not None else "unknown",
                    "denied",
                    detail={"path": scope.get("path", ""), "reason": reason},
                )
                return _denied(403, "forbidden", f"{reason}: ask the operator for a valid one")
            state.update(actor=entry.name, admin=entry.admin, session_id=None)
            return None
        session_id = _cookie(scope, auth.SESSION_COOKIE)
        session = access.sessions.get(session_id)
        if session is None:
            return _denied(
                401, "unauthorized", "log in: send Authorization: Bearer TOKEN or log in on the page", challenge=True
            )
        if access.tokens.current(session.name, session.token_created) is None:
            access.sessions.close(session_id)
            await run_in_threadpool(
                access.record, session.name, "denied", detail={"path": scope.get("path", ""), "reason": "revoked token"}
            )
            return _denied(403, "forbidden", "the token of this session was revoked: log in with a valid one")
        if scope.get("method") not in SAFE_METHODS and not _same_origin(scope):
            await run_in_threadpool(
                access.record, session.name, "denied", detail={"path": scope.get("path", ""), "reason": "cross-origin"}
            )
            return _denied(403, "forbidden", "a session may only be used from this server's own page")
        state.update(actor=session.name, admin=session.role == "admin", session_id=session_id)
        return None


def _denied(status: int, code: str, message: str, *, challenge: bool = False) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="fetometry"'} if challenge or status == 401 else None
    return JSONResponse({"detail": message, "error": code}, status_code=status, headers=headers)
