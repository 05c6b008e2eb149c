"""FastAPI app: the page, ``POST /api/measure`` and ``POST /api/report`` over fetometry.exam.

Hardening, in the order a request meets it:
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

Access control (``serve/auth.py``; docs/ACCESS_CONTROL.md): with a token file
every route but ``GET /health``, ``/api/health``, the page's own files and ``POST
/api/login`` needs ``Authorization: Bearer TOKEN`` or a session cookie (401 without,
403 for a revoked or unknown token), then passes a per-token rate limit (429); every
measurement, report, correction, FHIR export, login and denial goes to the audit log
(``serve/audit.py``). Corrections (``POST /api/correct``) work on exams this server
measured, kept for a while in a bounded in-memory cache under a random exam id.

Where things are: ``app.py`` (this file) builds the app: error handlers, routes and
``create_app``; ``settings.py`` holds ``ServeSettings``; ``errors.py`` ``ApiError``;
``middleware.py`` the body limit, security headers and ``AccessControl`` with its
``AuthMiddleware``; ``exams.py`` the exam service, the predictor and exam caches and the
visit book; ``auth.py`` tokens, sessions and rate limits; ``audit.py`` the audit log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from pydantic import Field as PydanticField

from fetometry import DISCLAIMER, __version__
from fetometry.clinical.growth import GA_RANGE_WEEKS
from fetometry.exam import ExamResult
from fetometry.explain.methods import MAP_METHODS as EXPLAIN_METHODS
from fetometry.inference.predictor import Predictor
from fetometry.io.uploads import UnsupportedFileTypeError, safe_filename
from fetometry.serve import auth
from fetometry.serve.audit import ellipse_values, result_summary
from fetometry.serve.errors import ApiError, _error_response, _too_large
from fetometry.serve.exams import (
    ExamCache,
    ExamForm,
    ExamService,
    PredictorCache,
    Upload,
    VisitBook,
    _cache_for_correction,
    _editable,
    _images,
    _render_pdf,
    _store_visit,
    _visits_for_report,
    exam_form,
)
from fetometry.serve.middleware import (
    AccessControl,
    AuthMiddleware,
    BodySizeLimitMiddleware,
    SecurityHeadersMiddleware,
    _BodyTooLarge,
    _same_origin,
)
from fetometry.serve.settings import ServeSettings

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Room for the form fields and multipart framing on top of the file itself.
FORM_OVERHEAD_BYTES = 256 * 1024


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
