"""``fetometry pacs watch``: follow Orthanc's change feed, measure new US images, store SR + SC.

    GET /changes?since=<cursor>        NewInstance changes, in order
      -> simplified tags               not US -> skipped; our own SR/SC -> skipped
      -> download the file (streamed)  unreadable -> recorded with its reason
      -> measure_exam(plane_check="on")
           ok / no_pixel_size          -> SR (TID 5000) + SC overlay into the same study
           anything else               -> recorded with its reason, nothing stored
      -> one row in the state file + the cursor, in one transaction

Output UIDs are deterministic (``state.output_uid``) and looked up in Orthanc before each
upload, so a crash between upload and bookkeeping never stores an SR twice. Transient
Orthanc failures (after the client's bounded retries) stop the pass with the cursor at the
last fully processed change; the next pass resumes there. Patient identifiers never reach
the log: progress lines name Orthanc's resource IDs and statuses only.
"""

from __future__ import annotations

import io
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fetometry.pacs.orthanc import (
    OrthancAuthError,
    OrthancClient,
    OrthancError,
    OrthancNotFound,
    OrthancUnavailable,
)
from fetometry.pacs.state import InstanceRecord, WatchState, hash_uid, output_uid

__all__ = ["OWN_MANUFACTURER", "PassSummary", "Watcher"]

log = logging.getLogger(__name__)

OWN_MANUFACTURER = "fetometry"
OUTPUT_MODALITIES = ("SR", "OT")
SKIPPED = "skipped"
UNREADABLE = "unreadable"
GONE = "gone"
ERROR = "error"
#: exam statuses whose SR + SC are stored (no_pixel_size: the SR says why there are no mm)
STORED_STATUSES = ("ok", "no_pixel_size")


@dataclass
class PassSummary:
    """What one pass over the feed did: instances per status, uploads, time."""

    counts: Counter = field(default_factory=Counter)
    uploaded: int = 0
    already_stored: int = 0
    seconds: float = 0.0
    cursor: int = 0

    @property
    def instances(self) -> int:
        return sum(self.counts.values())

    def line(self) -> str:
        parts = ", ".join(f"{status} {n}" for status, n in sorted(self.counts.items())) or "nothing new"
        rate = f", {self.instances / self.seconds:.2f} instances/s" if self.seconds > 0 and self.instances else ""
        return (
            f"{self.instances} instance(s): {parts}; {self.uploaded} uploaded, {self.already_stored} already stored; "
            f"cursor {self.cursor}; {self.seconds:.1f} s{rate}"
        )


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Watcher:
    """One Orthanc server, one state file, one predictor.

    ``identity``: a ``provenance.ModelIdentity`` (default: ``model_identity(predictor)``).
    ``progress``: called with one line per instance (default: stderr).
    """

    def __init__(
        self,
        client: OrthancClient,
        state: WatchState,
        predictor,
        *,
        identity=None,
        plane_check: str = "on",
        page_size: int = 100,
        progress: Callable[[str], None] | None = _stderr,
        workdir: str | Path | None = None,
    ) -> None:
        from fetometry.provenance import model_identity

        self.client = client
        self.state = state
        self.predictor = predictor
        self.identity = identity or model_identity(predictor)
        self.plane_check = plane_check
        self.page_size = page_size
        self.progress = progress or (lambda _line: None)
        self.workdir = workdir

    # ----------------------------------------------------------------- the feed

    def run_once(self) -> PassSummary:
        """Process the feed from the cursor until Orthanc says Done (up to its ``Last``)."""
        summary = PassSummary(cursor=self.state.cursor)
        started = time.perf_counter()
        try:
            while True:
                page = self.client.changes(since=summary.cursor, limit=self.page_size)
                for change in page.changes:
                    if change.change_type == "NewInstance":
                        self._one_change(change.resource_id, change.seq, summary)
                    else:
                        self.state.advance(change.seq)
                    summary.cursor = change.seq
                if page.done or not page.changes:
                    break
        finally:
            summary.seconds = time.perf_counter() - started
        return summary

    def watch(self, poll_seconds: float = 10.0, *, should_stop: Callable[[], bool] = lambda: False) -> PassSummary:
        """Passes every ``poll_seconds`` until ``should_stop()`` or Ctrl-C; the summed summary."""
        total = PassSummary(cursor=self.state.cursor)
        try:
            while not should_stop():
                try:
                    summary = self.run_once()
                except OrthancAuthError:
                    raise
                except OrthancUnavailable as error:
                    self.progress(f"pacs watch: {error}; next try in {poll_seconds:g} s")
                else:
                    total.counts.update(summary.counts)
                    total.uploaded += summary.uploaded
                    total.already_stored += summary.already_stored
                    total.seconds += summary.seconds
                    total.cursor = summary.cursor
                    if summary.instances:
                        self.progress(f"pacs watch: {summary.line()}")
                if should_stop():
                    break
                time.sleep(poll_seconds)
        except KeyboardInterrupt:
            self.progress("pacs watch: stopped (Ctrl-C); the cursor is at the last fully processed change")
        return total

    def _one_change(self, orthanc_id: str, seq: int, summary: PassSummary) -> None:
        done = self.state.get(orthanc_id)
        if done is not None:  # processed before a crash that left the cursor behind
            self.state.advance(seq)
            return
        record = self.process(orthanc_id, summary)
        self.state.record(record, seq=seq)
        summary.counts[record.status] += 1
        reason = f": {record.reason}" if record.reason else ""
        self.progress(f"pacs watch: #{seq} instance {orthanc_id}: {record.status}{reason}")

    # ------------------------------------------------------------ one instance

    def process(self, orthanc_id: str, summary: PassSummary | None = None) -> InstanceRecord:
        """Measure one instance and store its SR + SC when measured (transient errors propagate)."""
        summary = summary if summary is not None else PassSummary()
        try:
            tags = self.client.simplified_tags(orthanc_id)
        except OrthancNotFound:
            return InstanceRecord(orthanc_id, GONE, "deleted from Orthanc before it was processed")
        sop_uid = str(tags.get("SOPInstanceUID") or "")
        hashed = hash_uid(sop_uid)
        modality = str(tags.get("Modality") or "").upper()
        manufacturer = str(tags.get("Manufacturer") or "")
        if manufacturer.lower() == OWN_MANUFACTURER or modality in OUTPUT_MODALITIES:
            return InstanceRecord(orthanc_id, SKIPPED, f"own output or derived object (modality {modality})", hashed)
        if modality != "US":
            return InstanceRecord(orthanc_id, SKIPPED, f"modality {modality or 'missing'}, not US", hashed)
        with tempfile.TemporaryDirectory(prefix="fetometry-pacs-", dir=self.workdir) as folder:
            try:
                path = self.client.download(orthanc_id, Path(folder) / "instance.dcm")
            except OrthancNotFound:
                return InstanceRecord(orthanc_id, GONE, "deleted from Orthanc before it was downloaded", hashed)
            return self._measure_and_store(orthanc_id, path, hashed, summary)

    def _measure_and_store(self, orthanc_id: str, path: Path, hashed, summary: PassSummary) -> InstanceRecord:
        import pydicom
        from pydicom.errors import InvalidDicomError

        from fetometry.exam import measure_exam
        from fetometry.report.dicom_sr import quiet_dicom

        try:
            exam = measure_exam(path, predictor=self.predictor, plane_check=self.plane_check, filename="instance.dcm")
            with quiet_dicom():
                source = pydicom.dcmread(path, stop_before_pixels=True)
        except (ValueError, OSError, EOFError, KeyError, TypeError, AttributeError, InvalidDicomError) as error:
            return InstanceRecord(orthanc_id, UNREADABLE, _short(error), hashed)
        except Exception as error:  # noqa: BLE001 - one bad instance must not stop the feed
            log.debug("instance %s: measurement failed", orthanc_id, exc_info=True)
            return InstanceRecord(orthanc_id, ERROR, f"measurement failed: {type(error).__name__}", hashed)
        status = exam.result.status
        if status not in STORED_STATUSES:
            return InstanceRecord(orthanc_id, status, exam.result.detail or status, hashed)
        try:
            sr, sc = self._outputs(exam, source)
        except ValueError as error:  # SRSourceError: the source cannot be referenced
            return InstanceRecord(orthanc_id, ERROR, f"SR/SC not built: {_short(error)}", hashed)
        try:
            for dataset in (sr, sc):
                self._store(dataset, summary)
        except (OrthancAuthError, OrthancUnavailable):
            raise  # stop the pass; the cursor stays before this instance
        except OrthancError as error:  # e.g. HTTP 400: Orthanc will not take it; retrying would loop
            return InstanceRecord(orthanc_id, ERROR, f"upload refused: {_short(error)}", hashed, sr.SOPInstanceUID)
        reason = "" if status == "ok" else (exam.result.detail or status)
        return InstanceRecord(orthanc_id, status, reason, hashed, sr.SOPInstanceUID, sc.SOPInstanceUID)

    def _outputs(self, exam, source):
        from fetometry.report.dicom_sr import build_sr
        from fetometry.report.secondary_capture import build_secondary_capture

        ident = self.identity
        number = _instance_number(source)
        sr = build_sr(exam, source, **ident.as_kwargs(), instance_number=number)
        sc = build_secondary_capture(exam, source, instance_number=number)
        for dataset, kind in ((sr, "sr"), (sc, "sc")):
            uid = output_uid(source.SOPInstanceUID, ident.name, ident.weights_sha256, kind)
            dataset.SOPInstanceUID = uid
            if getattr(dataset, "file_meta", None) is not None:
                dataset.file_meta.MediaStorageSOPInstanceUID = uid
            # one series per study, model and kind: every SR of a study lands in one series
            dataset.SeriesInstanceUID = output_uid(
                source.StudyInstanceUID, ident.name, ident.weights_sha256, f"{kind}-series"
            )
        return sr, sc

    def _store(self, dataset, summary: PassSummary) -> None:
        import pydicom

        from fetometry.report.dicom_sr import quiet_dicom

        if self.client.has_instance(dataset.SOPInstanceUID):
            summary.already_stored += 1
            return
        buffer = io.BytesIO()
        with quiet_dicom():
            pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
        answer = self.client.upload(buffer.getvalue())
        summary.uploaded += 1
        if answer.get("ID"):  # its NewInstance change will come by: known already, no tag request
            self.state.record(InstanceRecord(str(answer["ID"]), SKIPPED, "own output (uploaded by this watcher)"))


def _instance_number(source) -> int:
    try:
        return max(1, int(source.get("InstanceNumber") or 1))
    except (TypeError, ValueError):
        return 1


def _short(error: BaseException, limit: int = 200) -> str:
    """An exception as one short line (fetometry's reader messages name no patient data)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:limit]
