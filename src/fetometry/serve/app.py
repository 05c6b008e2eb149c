"""FastAPI app: the page, ``POST /api/measure`` and ``POST /api/report`` over fetometry.exam.

Hardening (issue 7), in the order a request meets it:
- bodies larger than the upload limit get 413 (checked on Content-Length AND on the
  bytes actually received, so chunked uploads cannot slip past); the rest of such a
  body is read and discarded so the client sees the answer, with bounded memory;
- at most ``max_pending`` exams wait at once (503 beyond: retry later) and one runs at a
  time in a worker thread, so memory stays bounded by one decoded image and the event
  loop stays free; the model is shared, loaded once per name, never per request;
- files are recognised by content (PNG, JPEG, BMP, TIFF, DICOM), never by name or
  declared type; the uploaded name is only a label (``safe_filename``) and no path is
  ever built from it; nothing is unpickled; a request may pick a model only by a
  shipped name, never by a path;
- every bad input is a 4xx with ``{"detail": reason, "error": code}``, checked before
  the model runs; nothing is stored unless a pregnancy id is given AND the server was
  started with a database, and then only a complete exam, in one transaction.

Access control (issue 18, ``serve/auth.py``; docs/ACCESS_CONTROL.md): with a token file
every route but ``GET /health``, ``/api/health``, the page's own files and ``POST
/api/login`` needs ``Authorization: Bearer TOKEN`` or a session cookie (401 without,
403 for a revoked or unknown token), then passes a per-token rate limit (429); every
measurement, report, correction, FHIR export, login and denial goes to the audit log
(``serve/audit.py``). Corrections (``POST /api/correct``) work on exams this server
measured, kept for a while in a bounded in-memory cache under a random exam id.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from pydantic import Field as PydanticField
from starlette.exceptions import HTTPException

from fetometry import DISCLAIMER, __version__
from fetometry.clinical.growth import GA_RANGE_WEEKS
from fetometry.exam import ExamResult, measure_exam
from fetometry.explain.methods import MAP_METHODS as EXPLAIN_METHODS
from fetometry.inference.predictor import Predictor
from fetometry.io.uploads import UnsupportedFileTypeError, safe_filename
from fetometry.resources import DEFAULT_MODEL, weights_root
from fetometry.serve import auth
from fetometry.serve.audit import AuditLog, ellipse_values, result_summary

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
MIB = 1024 * 1024
#: Room for the form fields and multipart framing on top of the file itself.
FORM_OVERHEAD_BYTES = 256 * 1024
#: An oversized body is read and discarded (so the client gets the 413) up to this much.
DRAIN_LIMIT_BYTES = 256 * MIB
#: Opaque pregnancy ids: no names, no spaces, nothing a path or a query could abuse.
PREGNANCY_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Content Security Policy of the page: everything from this server, images also inline.
PAGE_CSP = "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"


@dataclass
class ServeSettings:
    """What the operator chose at start-up (trusted, unlike request fields)."""

    model: str | None = None
    max_upload_mb: float = 20.0
    db_url: str | None = None
    max_pending: int = 16
    #: JSON token file (``fetometry token create``); None: no login (loopback only).
    tokens_file: str | None = None
    #: SQLite file of the append-only audit log; None: the log is kept in memory (lost at exit).
    audit_path: str | None = None
    #: Requests a minute per token (per "local" without tokens); None: no limit.
    rate_limit_per_minute: int | None = None
    session_ttl_s: float = 8 * 3600.0
    #: Measured exams kept for correction, and for how long.
    exam_cache_size: int = 16
    exam_ttl_s: float = 1800.0

    def __post_init__(self) -> None:
        if not 0 < self.max_upload_mb <= 1024:
            raise ValueError(f"max upload {self.max_upload_mb} MB: choose 0-1024 MB")
        if self.max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        if self.rate_limit_per_minute is not None and self.rate_limit_per_minute < 1:
            raise ValueError(f"rate limit {self.rate_limit_per_minute}: choose at least 1 request a minute")
        if self.exam_cache_size < 1 or self.exam_ttl_s <= 0 or self.session_ttl_s <= 0:
            raise ValueError("exam_cache_size, exam_ttl_s and session_ttl_s must be positive")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)


class ApiError(Exception):
    """An HTTP error with a reason: becomes ``{"detail": message, "error": code}``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _too_large(size_bytes: int | None, limit_bytes: int) -> ApiError:
    size = f"{size_bytes / MIB:.1f} MB" if size_bytes else "more than the limit"
    return ApiError(
        413,
        "too_large",
        f"the upload is {size}; the limit is {limit_bytes / MIB:g} MB (the operator can change it with --max-upload-mb)",
    )


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


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        {"detail": error.message, "error": error.code},
        status_code=error.status,
        headers={"Connection": "close"} if error.status == 413 else None,
    )


# -------------------------------------------------------------------------- predictors


class PredictorCache:
    """One Predictor per model name, loaded on first use and kept for the server's life."""

    def __init__(self, default_model: str | None, factory: Callable[[str | None], Predictor] = Predictor.from_weights):
        self.default_model = default_model
        self._factory = factory
        self._predictors: dict[str | None, Predictor] = {}
        self._identities: dict = {}
        self._lock = threading.Lock()

    def shipped_names(self) -> list[str]:
        root = weights_root()
        return sorted(p.name for p in root.glob("*") if (p / "config.json").is_file()) if root.is_dir() else []

    def choices(self) -> list[str]:
        """Model names a request may ask for: the server's model and the shipped ones."""
        default = self.default_model or DEFAULT_MODEL
        return [default] + [n for n in self.shipped_names() if n != default]

    def resolve(self, requested: str | None) -> str | None:
        """A request's model field -> a key of this cache (never a path from the request)."""
        if requested is None or requested == "" or requested == (self.default_model or DEFAULT_MODEL):
            return self.default_model
        if requested not in self.shipped_names():
            raise ApiError(
                422, "unknown_model", f"unknown model {requested!r}; choose one of {', '.join(self.choices())}"
            )
        return requested

    def get(self, key: str | None) -> Predictor:
        with self._lock:  # two first requests must not both load the weights
            if key not in self._predictors:
                log.info("loading model %s", key or DEFAULT_MODEL)
                self._predictors[key] = self._factory(key)
            return self._predictors[key]

    def identity(self, key: str | None):
        """provenance.model_identity of a loaded model (its weights hashed once per server)."""
        from fetometry.provenance import model_identity

        predictor = self.get(key)
        with self._lock:
            if key not in self._identities:
                self._identities[key] = model_identity(predictor)
            return self._identities[key]


# ------------------------------------------------------------------------------- forms


@dataclass
class ExamForm:
    """The multipart form of /api/measure and /api/report."""

    file: UploadFile
    pixel_size_mm: float | None = None
    ga_weeks: float | None = None
    lmp: str | None = None
    exam_date: str | None = None
    ga_source: str | None = None
    explain: str | None = None
    uncertainty: bool = False
    model: str | None = None
    frame: int = 0
    pregnancy_id: str | None = None


def exam_form(
    file: Annotated[UploadFile, File(description="PNG, JPEG, BMP, TIFF or DICOM (recognised by content)")],
    pixel_size_mm: Annotated[
        float | None, Form(description="mm per pixel; read from DICOM when absent; without it no mm values")
    ] = None,
    ga_weeks: Annotated[
        float | None, Form(description="gestational age from dating, 14-40 weeks; enables centiles")
    ] = None,
    lmp: Annotated[str | None, Form(description="last menstrual period YYYY-MM-DD (instead of ga_weeks)")] = None,
    exam_date: Annotated[str | None, Form(description="scan date YYYY-MM-DD (default today)")] = None,
    ga_source: Annotated[
        str | None, Form(description="where ga_weeks comes from: known (default), crl, ivf, earlier_scan")
    ] = None,
    explain: Annotated[str | None, Form(description=f"explanation map: {', '.join(EXPLAIN_METHODS)}")] = None,
    uncertainty: Annotated[bool, Form(description="add the HC uncertainty (TTA spread)")] = False,
    model: Annotated[str | None, Form(description="a shipped model name (default: the server's)")] = None,
    frame: Annotated[int, Form(description="frame of a DICOM cine loop", ge=0)] = 0,
    pregnancy_id: Annotated[
        str | None, Form(description="opaque pregnancy id: store this visit (server needs --db)")
    ] = None,
) -> ExamForm:
    return ExamForm(
        file,
        pixel_size_mm,
        ga_weeks,
        lmp or None,
        exam_date or None,
        ga_source or None,
        explain or None,
        uncertainty,
        model or None,
        frame,
        pregnancy_id or None,
    )


# ------------------------------------------------------------------------------ visits


class VisitBook:
    """Stores complete exams per pregnancy through the clinical VisitStore (optional)."""

    def __init__(self, db_url: str | None):
        self.db_url = db_url
        self._store = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.db_url is not None

    def check_request(self, pregnancy_id: str | None) -> None:
        if pregnancy_id is None:
            return
        if not self.enabled:
            raise ApiError(
                400, "no_database", "this server stores no visits (start it with --db URL); send no pregnancy_id"
            )
        if not PREGNANCY_ID_PATTERN.match(pregnancy_id):
            raise ApiError(
                422,
                "bad_pregnancy_id",
                "pregnancy_id: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit; never a name",
            )

    def store(self):
        with self._lock:
            if self._store is None:
                from fetometry.clinical.visits import VisitStore

                self._store = VisitStore(self.db_url)
            return self._store


# --------------------------------------------------------------------------------- app


@dataclass
class Upload:
    """What the server knows of one measured upload besides the exam: for the audit and the cache."""

    image_sha256: str
    identity: object
    offset_px: float
    actor: str = auth.LOCAL_ACTOR


@dataclass
class CachedExam:
    actor: str
    original: ExamResult
    current: ExamResult
    upload: Upload
    expires: float


class ExamCache:
    """Recent exams by random id, for corrections: bounded (oldest dropped), expiring, per actor.

    The server keeps the pixel size, GA and image itself, so a correction never trusts
    them from the client. An exam is only ever handed back to the actor who measured it.
    """

    def __init__(self, size: int, ttl_s: float, clock=time.monotonic):
        self.size, self.ttl_s, self._clock = size, ttl_s, clock
        self._entries: OrderedDict[str, CachedExam] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, exam: ExamResult, upload: Upload) -> str:
        exam_id = secrets.token_urlsafe(18)
        with self._lock:
            self._expire()
            self._entries[exam_id] = CachedExam(upload.actor, exam, exam, upload, self._clock() + self.ttl_s)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return exam_id

    def get(self, exam_id: str, actor: str) -> CachedExam:
        with self._lock:
            self._expire()
            entry = self._entries.get(exam_id)
        if entry is None or entry.actor != actor:
            raise ApiError(404, "unknown_exam", "no such exam here (it expired or was never measured): measure again")
        return entry

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, e in self._entries.items() if e.expires <= now]:
            del self._entries[key]


class ExamService:
    """Runs exams one at a time off the event loop, with a bounded queue."""

    def __init__(self, settings: ServeSettings, cache: PredictorCache, visits: VisitBook):
        self.settings = settings
        self.cache = cache
        self.visits = visits
        self.pending = 0
        self._slot: asyncio.Semaphore | None = None

    async def run(self, form: ExamForm, finish: Callable[[ExamResult, Upload], object] | None = None, *, actor=None):
        """Measure the upload; then ``finish(exam, upload)`` (images, PDF, storage, audit) in the same slot.

        Returns ``finish(exam, upload)``, or the ExamResult when there is no ``finish``.
        """
        key = self.cache.resolve(form.model)
        self.visits.check_request(form.pregnancy_id)
        if self.pending >= self.settings.max_pending:
            raise ApiError(503, "busy", f"{self.pending} exams are waiting; retry in a few seconds")
        self.pending += 1
        try:
            # One exam at a time: bounds memory to one decoded image and shares the model safely.
            self._slot = self._slot or asyncio.Semaphore(1)
            async with self._slot:
                data = await self._read(form.file)
                predictor = await run_in_threadpool(self.cache.get, key)
                exam = await run_in_threadpool(self._measure, data, predictor, form)
                if finish is None:
                    return exam
                identity = await run_in_threadpool(self.cache.identity, key)
                upload = Upload(
                    hashlib.sha256(data).hexdigest(), identity, predictor.hc_offset_px, actor or auth.LOCAL_ACTOR
                )
                return await run_in_threadpool(finish, exam, upload)
        finally:
            self.pending -= 1

    async def _read(self, upload: UploadFile) -> bytes:
        limit = self.settings.max_upload_bytes
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise _too_large(None, limit)
        return data

    def _measure(self, data: bytes, predictor: Predictor, form: ExamForm) -> ExamResult:
        return measure_exam(
            data,
            predictor=predictor,
            pixel_size_mm=form.pixel_size_mm,
            ga_weeks=form.ga_weeks,
            lmp=form.lmp,
            exam_date=form.exam_date,
            ga_source=form.ga_source,
            explain=form.explain,
            uncertainty=form.uncertainty,
            filename=form.file.filename,
            frame=form.frame,
        )


def _png_data_url(rgb: np.ndarray | None) -> str | None:
    if rgb is None:
        return None
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("could not encode a PNG")
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def _gray_data_url(image: np.ndarray) -> str:
    rgb = cv2.cvtColor(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2RGB)
    return _png_data_url(rgb)


def _images(exam: ExamResult) -> dict:
    return {
        "image": _gray_data_url(exam.image),
        "overlay": _png_data_url(exam.overlay_rgb()),
        "explanation": _png_data_url(exam.explanation_rgb()),
        "uncertainty": _png_data_url(exam.uncertainty_rgb()),
    }


def _store_visit(book: VisitBook, pregnancy_id: str, exam: ExamResult) -> dict:
    """Store a measured exam (VisitStore writes it in one transaction); say what happened."""
    if not exam.measured:
        return {"visit_stored": False, "visit_note": f"visit not stored: nothing was measured ({exam.result.status})"}
    m = exam.result.measurement
    store = book.store()
    visit_id = store.add_exam(
        pregnancy_id,
        exam.exam_date,
        exam.ga_weeks,
        {"hc_mm": m.hc_mm, "bpd_mm": m.bpd_mm, "ofd_mm": m.ofd_mm},
        ga_source=exam.ga_source,
        model=exam.result.model,
    )
    return {"visit_stored": True, "visit_id": visit_id, "visit_warnings": store.warnings(pregnancy_id)}


def _visits_for_report(book: VisitBook, pregnancy_id: str | None) -> list[dict] | None:
    """Earlier HC points of this pregnancy for the growth chart (read only)."""
    if pregnancy_id is None:
        return None
    return [{"ga_weeks": ga, "hc_mm": hc} for ga, hc in book.store().chart_points(pregnancy_id, "hc")]


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return _error_response(error)

    @app.exception_handler(_BodyTooLarge)
    async def body_too_large(request: Request, error: _BodyTooLarge):
        return _error_response(_too_large(error.size_bytes, app.state.service.settings.max_upload_bytes))

    @app.exception_handler(UnsupportedFileTypeError)
    async def unsupported(request: Request, error: UnsupportedFileTypeError):
        return _error_response(ApiError(415, "unsupported_type", str(error)))

    @app.exception_handler(ValueError)
    async def bad_input(request: Request, error: ValueError):
        # ImageReadError, DicomError, PixelSizeError, ExamInputError: messages say how to fix the input.
        return _error_response(ApiError(422, "invalid_input", str(error)))

    @app.exception_handler(RequestValidationError)
    async def bad_field(request: Request, error: RequestValidationError):
        reasons = [
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'form'}: {e.get('msg', 'invalid')}"
            for e in error.errors()
        ]
        return _error_response(ApiError(422, "invalid_field", "; ".join(reasons)))


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

#: Paths open without a token: liveness, the page's own (public) files and the login itself.
OPEN_PATHS = frozenset({"/health", "/api/health", "/", "/favicon.ico"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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


def _actor(request: Request) -> str:
    return getattr(request.state, "actor", auth.LOCAL_ACTOR)


# --------------------------------------------------------------------------------- app


def create_app(
    settings: ServeSettings | None = None, *, predictor_factory: Callable[[str | None], Predictor] | None = None
) -> FastAPI:
    """The fetometry web app; ``predictor_factory`` (name -> Predictor) lets tests inject models."""
    settings = settings or ServeSettings()
    cache = PredictorCache(settings.model, predictor_factory or Predictor.from_weights)
    visits = VisitBook(settings.db_url)
    if visits.enabled:
        visits.store()  # a wrong database URL fails at start-up, not at the first visit
    service = ExamService(settings, cache, visits)
    access = AccessControl(settings)  # a bad token file fails at start-up too
    exams = ExamCache(settings.exam_cache_size, settings.exam_ttl_s)
    app = FastAPI(
        title="fetometry",
        version=__version__,
        description="Fetal head biometry from 2D ultrasound: HC, BPD, OFD, GA and centiles. " + DISCLAIMER,
    )
    app.state.service = service
    app.state.access = access
    app.state.exams = exams
    _install_error_handlers(app)
    _add_routes(app, service)
    _add_access_routes(app, access)
    _add_correction_routes(app, service, access, exams)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(AuthMiddleware, access=access)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(
        BodySizeLimitMiddleware,
        limit_bytes=settings.max_upload_bytes + FORM_OVERHEAD_BYTES,
        message_limit_bytes=settings.max_upload_bytes,
    )
    return app


def _add_routes(app: FastAPI, service: ExamService) -> None:
    access: AccessControl = app.state.access

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/api/info", summary="Server settings the page needs")
    async def info(request: Request):
        low, high = GA_RANGE_WEEKS
        return {
            "version": __version__,
            "disclaimer": DISCLAIMER,
            "models": service.cache.choices(),
            "max_upload_mb": service.settings.max_upload_mb,
            "explain_methods": list(EXPLAIN_METHODS),
            "ga_range_weeks": [low, high],
            "visits_enabled": service.visits.enabled,
            "auth_enabled": access.enabled,
            "actor": _actor(request),
            "admin": bool(getattr(request.state, "admin", False)),
        }

    @app.get("/api/health", summary="Liveness check (no token needed)")
    async def health():
        return {"status": "ok"}

    @app.get("/health", summary="Liveness check (no token needed)")
    async def health_root():
        return {"status": "ok"}

    @app.post("/api/measure", summary="Measure one image: the JSON of `fetometry measure --json`")
    async def measure(
        request: Request,
        form: Annotated[ExamForm, Depends(exam_form)],
        images: Annotated[bool, Form(description="add the overlay and maps as PNG data URLs")] = False,
    ):
        exams: ExamCache = app.state.exams

        def finish(exam: ExamResult, upload: Upload) -> dict:
            row = exam.to_json()
            exam_id = _cache_for_correction(exams, exam, upload)
            row["exam_id"] = exam_id
            row["editable_ellipse"] = _editable(exam, upload) if exam_id else None
            if form.pregnancy_id is not None:
                row.update(_store_visit(service.visits, form.pregnancy_id, exam), pregnancy_id=form.pregnancy_id)
            if images:
                row["images"] = _images(exam)
            _audit_exam(access, upload, "measure", exam, exam_id)
            return row

        return await service.run(form, finish, actor=_actor(request))

    @app.post(
        "/api/report",
        summary="Measure one image and return the PDF report",
        response_class=Response,
        responses={200: {"content": {"application/pdf": {}}}},
    )
    async def report(request: Request, form: Annotated[ExamForm, Depends(exam_form)]):
        def finish(exam: ExamResult, upload: Upload) -> tuple[str, bytes]:
            visits = _visits_for_report(service.visits, form.pregnancy_id)
            pdf = _render_pdf(exam, visits, form.pregnancy_id)
            _audit_exam(access, upload, "report", exam, None)
            return exam.result.filename, pdf

        filename, pdf = await service.run(form, finish, actor=_actor(request))
        return _pdf_response(filename, pdf)

    @app.post(
        "/api/fhir",
        summary="Measure one image and return a FHIR R4 Bundle of its biometry",
        response_class=Response,
        responses={200: {"content": {"application/fhir+json": {}}}},
    )
    async def fhir(request: Request, form: Annotated[ExamForm, Depends(exam_form)]):
        from fetometry.report.fhir import exam_to_fhir_bundle

        def finish(exam: ExamResult, upload: Upload) -> dict:
            identity = upload.identity
            bundle = exam_to_fhir_bundle(exam, model_name=identity.name, model_version=identity.version)
            _audit_exam(access, upload, "fhir", exam, None)
            return bundle

        bundle = await service.run(form, finish, actor=_actor(request))
        return Response(json.dumps(bundle, allow_nan=False), media_type="application/fhir+json")


def _pdf_response(filename: str, pdf: bytes) -> Response:
    name = f"{Path(safe_filename(filename)).stem}_report.pdf"
    return Response(
        pdf, media_type="application/pdf", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


def _audit_exam(access: AccessControl, upload: Upload, action: str, exam: ExamResult, exam_id: str | None) -> None:
    access.record(
        upload.actor,
        action,
        image_sha256=upload.image_sha256,
        exam_id=exam_id,
        identity=upload.identity,
        summary=result_summary(exam),
        detail={"corrected_by_user": True} if exam.corrected_by_user else None,
    )


def _cache_for_correction(exams: ExamCache, exam: ExamResult, upload: Upload) -> str | None:
    from fetometry.correction import CORRECTABLE_STATUSES

    if exam.result.ellipse is None or exam.result.status not in CORRECTABLE_STATUSES:
        return None
    return exams.put(exam, upload)


def _editable(exam: ExamResult, upload: Upload) -> dict | None:
    from fetometry.correction import editable_ellipse

    offset = exam.result.measurement.offset_px if exam.result.measurement is not None else upload.offset_px
    row = editable_ellipse(exam, offset)
    if row is not None:
        row.update(image_width_px=int(exam.image.shape[1]), image_height_px=int(exam.image.shape[0]))
    return row


# ---------------------------------------------------------------- login, audit, correct


class LoginBody(BaseModel):
    token: str = PydanticField(min_length=1, max_length=512, description="a token from `fetometry token create`")


class CorrectionBody(BaseModel):
    """The corrected ellipse on the ORIGINAL image's pixel grid (x = column, y = row)."""

    exam_id: str = PydanticField(min_length=1, max_length=64, description="the exam_id /api/measure returned")
    center_x_px: float
    center_y_px: float
    semi_axes_a_px: float = PydanticField(description="first semi-axis, along angle_rad")
    semi_axes_b_px: float = PydanticField(description="second semi-axis, perpendicular")
    angle_rad: float = PydanticField(description="direction of the first axis, from +x towards +y")
    images: bool = PydanticField(default=True, description="add the overlay and image as PNG data URLs")


def _add_access_routes(app: FastAPI, access: AccessControl) -> None:
    @app.post("/api/login", summary="Open a page session with a token (sets an HttpOnly cookie)")
    async def login(body: LoginBody, request: Request):
        if not access.enabled:
            raise ApiError(400, "no_tokens", "this server has no tokens (started without --tokens): no login needed")
        entry = access.tokens.lookup(body.token)
        if entry is None or not entry.active:
            reason = "unknown token" if entry is None else "revoked token"
            actor = entry.name if entry is not None else "unknown"
            await run_in_threadpool(access.record, actor, "denied", detail={"path": "/api/login", "reason": reason})
            raise ApiError(403, "forbidden", f"{reason}: ask the operator for a valid one")
        if not _same_origin(request.scope):
            raise ApiError(403, "forbidden", "log in from this server's own page")
        session_id = access.sessions.open(entry)
        await run_in_threadpool(access.record, entry.name, "login")
        response = JSONResponse({"actor": entry.name, "role": entry.role, "expires_in_s": int(access.sessions.ttl_s)})
        response.set_cookie(
            auth.SESSION_COOKIE,
            session_id,
            max_age=int(access.sessions.ttl_s),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    @app.post("/api/logout", summary="Close this page session")
    async def logout(request: Request):
        session_id = getattr(request.state, "session_id", None)
        if session_id:
            access.sessions.close(session_id)
            await run_in_threadpool(access.record, _actor(request), "logout")
        response = JSONResponse({"logged_out": bool(session_id)})
        response.delete_cookie(auth.SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @app.get("/api/audit", summary="The audit log (admin tokens only)")
    async def audit(
        request: Request,
        since: Annotated[str | None, Query(description="ISO 8601 time, e.g. 2026-01-31T12:00:00Z")] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ):
        if not getattr(request.state, "admin", False):
            await run_in_threadpool(
                access.record, _actor(request), "denied", detail={"path": "/api/audit", "reason": "not an admin"}
            )
            raise ApiError(403, "forbidden", "the audit log needs an admin token")
        return {"entries": await run_in_threadpool(lambda: access.audit.query(since=since, limit=limit))}


def _add_correction_routes(app: FastAPI, service: ExamService, access: AccessControl, exams: ExamCache) -> None:
    @app.post("/api/correct", summary="Replace the fitted ellipse of a measured exam by the user's (recomputed here)")
    async def correct(body: CorrectionBody, request: Request):
        from fetometry.correction import CorrectionError, correct_exam, ellipse_from_fields

        entry = exams.get(body.exam_id, _actor(request))

        def work() -> dict:
            try:
                ellipse = ellipse_from_fields(
                    body.center_x_px, body.center_y_px, body.semi_axes_a_px, body.semi_axes_b_px, body.angle_rad
                )
                corrected = correct_exam(entry.original, ellipse)
            except CorrectionError as error:
                raise ApiError(422, "bad_ellipse", str(error)) from None
            entry.current = corrected
            upload = entry.upload
            access.record(
                _actor(request),
                "correct",
                image_sha256=upload.image_sha256,
                exam_id=body.exam_id,
                identity=upload.identity,
                summary=result_summary(corrected),
                detail={
                    "automatic": ellipse_values(corrected.automatic),
                    "corrected": ellipse_values(corrected.result),
                },
            )
            row = corrected.to_json()
            row["exam_id"] = body.exam_id
            if body.images:
                row["images"] = _images(corrected)
            return row

        return await run_in_threadpool(work)

    @app.get(
        "/api/exams/{exam_id}/report",
        summary="The PDF report of an exam measured here (corrected, if it was)",
        response_class=Response,
        responses={200: {"content": {"application/pdf": {}}}},
    )
    async def exam_report(exam_id: str, request: Request):
        entry = exams.get(exam_id, _actor(request))

        def work() -> bytes:
            exam = entry.current
            pdf = _render_pdf(exam, None, None)
            _audit_exam(access, Upload(**{**entry.upload.__dict__, "actor": _actor(request)}), "report", exam, exam_id)
            return pdf

        pdf = await run_in_threadpool(work)
        return _pdf_response(entry.current.result.filename, pdf)


def _render_pdf(exam: ExamResult, visits: list[dict] | None, label: str | None) -> bytes:
    """The PDF as bytes; its temporary file is gone before the response leaves."""
    with tempfile.TemporaryDirectory(prefix="fetometry-report-") as folder:
        path = exam.write_report(Path(folder) / "report.pdf", visits=visits, label=label)
        return path.read_bytes()
