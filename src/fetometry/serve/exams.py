"""The exam side of the server: forms in, exams measured one at a time, exams kept for corrections.

``ExamService`` runs an upload through ``fetometry.exam.measure_exam`` off the event loop
with a bounded queue, sharing one model per name (``PredictorCache``); ``VisitBook``
stores visits when the server has a database; ``ExamCache`` keeps recent exams for
``POST /api/correct``. The helpers at the end turn an exam into what a route returns
(PNG data URLs, stored visits, PDF bytes). No routes here: those are in ``app.py``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
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
from fastapi import File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool

from fetometry.exam import ExamResult, measure_exam
from fetometry.explain.methods import MAP_METHODS as EXPLAIN_METHODS
from fetometry.inference.predictor import Predictor
from fetometry.resources import DEFAULT_MODEL, weights_root
from fetometry.serve import auth
from fetometry.serve.errors import ApiError, _too_large
from fetometry.serve.settings import ServeSettings

log = logging.getLogger(__name__)

#: Opaque pregnancy ids: no names, no spaces, nothing a path or a query could abuse.
PREGNANCY_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


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


# --------------------------------------------------------------------- exams and cache


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
                prediction = exam.result.prediction
                offset = predictor.hc_offset_px if prediction is None else predictor.boundary_offset_px(prediction)
                upload = Upload(hashlib.sha256(data).hexdigest(), identity, offset, actor or auth.LOCAL_ACTOR)
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


# ------------------------------------------------------------ what the routes hand out


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


def _render_pdf(exam: ExamResult, visits: list[dict] | None, label: str | None) -> bytes:
    """The PDF as bytes; its temporary file is gone before the response leaves."""
    with tempfile.TemporaryDirectory(prefix="fetometry-report-") as folder:
        path = exam.write_report(Path(folder) / "report.pdf", visits=visits, label=label)
        return path.read_bytes()
