"""fetometry.pacs with an in-memory fake Orthanc (httpx.MockTransport): the real client, state and watcher.

The shipped default model is loaded once per module and measures one bundled HC18 sample
written as a synthetic calibrated ultrasound DICOM; the 50-instance test reuses that exam
(the bookkeeping is under test there, not the model).
"""

from __future__ import annotations

import hashlib
import io
import json
import re

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from fetometry.exam import measure_exam
from fetometry.inference.predictor import Predictor
from fetometry.io.dicom import ultrasound_dicom_bytes
from fetometry.io.images import read_image
from fetometry.pacs.orthanc import OrthancAuthError, OrthancClient, OrthancUnavailable, read_password_file
from fetometry.pacs.state import WatchState, hash_uid, output_uid
from fetometry.pacs.watch import Watcher
from fetometry.report.dicom_sr import read_sr_measurements
from fetometry.resources import SAMPLES_DIR

SAMPLE = SAMPLES_DIR / "training_set" / "345_HC.png"
PIXEL_MM = 0.130960682505
PATIENT = dict(patient_name="PHANTOM^PACS^UNIT", patient_id="SYNTH-PACS-4711")
HC = "11984-2"


class FakeOrthanc:
    """Just enough of Orthanc's REST API: changes, tags, file, upload, lookup, study instances."""

    def __init__(self, *, password: str = "secret") -> None:
        self.files: dict[str, bytes] = {}
        self.tags: dict[str, dict] = {}
        self.changes: list[dict] = []
        self.password = password
        self.failures: dict[str, int] = {}  # route -> connection errors still to raise
        self.store_then_timeout = 0  # uploads that are stored and then time out (the answer is lost)
        self.requests: list[str] = []
        self.uploads = 0

    # -- helpers for the tests
    def add(self, data: bytes, *, tags: dict | None = None) -> str:
        if tags is None:
            dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            tags = {
                key: str(dataset.get(key, ""))
                for key in ("Modality", "Manufacturer", "SOPInstanceUID", "StudyInstanceUID", "PatientID")
            }
        orthanc_id = hashlib.sha1(tags["SOPInstanceUID"].encode()).hexdigest()
        if orthanc_id in self.files:
            return orthanc_id
        self.files[orthanc_id], self.tags[orthanc_id] = data, tags
        self.changes.append({"Seq": len(self.changes) + 1, "ChangeType": "NewInstance", "ResourceType": "Instance"})
        self.changes[-1]["ID"] = orthanc_id
        return orthanc_id

    def modality(self, modality: str) -> list[str]:
        return [i for i, t in self.tags.items() if t["Modality"] == modality]

    # -- the transport
    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        route = re.sub(r"/instances/[0-9a-f]+", "/instances/ID", path)
        self.requests.append(f"{request.method} {route}")
        if self.failures.get(route, 0) > 0:
            self.failures[route] -= 1
            raise httpx.ConnectError("connection refused", request=request)
        expected = "Basic " + __import__("base64").b64encode(f"test:{self.password}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return httpx.Response(401)
        if path == "/system":
            return httpx.Response(200, json={"Version": "fake"})
        if path == "/changes":
            since, limit = int(request.url.params["since"]), int(request.url.params["limit"])
            later = [c for c in self.changes if c["Seq"] > since]
            page = later[:limit]
            last = page[-1]["Seq"] if page else len(self.changes)
            return httpx.Response(200, json={"Changes": page, "Done": len(later) <= limit, "Last": last})
        if path == "/instances" and request.method == "POST":
            self.uploads += 1
            before = len(self.files)
            orthanc_id = self.add(request.content)
            if self.store_then_timeout > 0:
                self.store_then_timeout -= 1
                raise httpx.ReadTimeout("timed out", request=request)
            status = "Success" if len(self.files) > before else "AlreadyStored"
            return httpx.Response(200, json={"ID": orthanc_id, "Status": status})
        if path == "/tools/lookup":
            uid = request.content.decode()
            hits = [{"ID": i, "Type": "Instance"} for i, t in self.tags.items() if t["SOPInstanceUID"] == uid]
            return httpx.Response(200, json=hits)
        match = re.fullmatch(r"/instances/([0-9a-f]+)/(simplified-tags|file)", path)
        if match:
            orthanc_id, what = match.groups()
            if orthanc_id not in self.files:
                return httpx.Response(404)
            if what == "simplified-tags":
                return httpx.Response(200, json=self.tags[orthanc_id])
            data = self.files[orthanc_id]
            chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
            return httpx.Response(
                200, stream=httpx.ByteStream(b"".join(chunks)) if len(chunks) < 2 else _Chunks(chunks)
            )
        return httpx.Response(404)


class _Chunks(httpx.SyncByteStream):
    def __init__(self, chunks):
        self.chunks = chunks

    def __iter__(self):
        yield from self.chunks


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_weights()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return read_image(SAMPLE)


@pytest.fixture(scope="module")
def calibrated(image) -> bytes:
    return ultrasound_dicom_bytes(image, pixel_size_mm=PIXEL_MM, **PATIENT)


@pytest.fixture
def fake() -> FakeOrthanc:
    return FakeOrthanc()


def _client(fake: FakeOrthanc, **options) -> OrthancClient:
    return OrthancClient(
        "http://orthanc.test",
        username="test",
        password="secret",
        transport=httpx.MockTransport(fake.handler),
        sleep=lambda _s: None,
        **options,
    )


def _watcher(fake, predictor, tmp_path, lines=None, **options) -> Watcher:
    state = WatchState(tmp_path / "state.sqlite")
    sink = lines.append if lines is not None else None
    return Watcher(_client(fake, **options), state, predictor, progress=sink)


def _rewrite(data: bytes, **changes) -> bytes:
    dataset = pydicom.dcmread(io.BytesIO(data))
    for key, value in changes.items():
        setattr(dataset, key, value)
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _new_sop(data: bytes, **changes) -> bytes:
    uid = generate_uid()
    out = _rewrite(data, SOPInstanceUID=uid, **changes)
    dataset = pydicom.dcmread(io.BytesIO(out))
    dataset.file_meta.MediaStorageSOPInstanceUID = uid
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- the loop


def test_calibrated_instance_gets_an_sr_and_an_sc_in_its_study(fake, predictor, calibrated, tmp_path):
    lines: list[str] = []
    source = fake.add(calibrated)
    watcher = _watcher(fake, predictor, tmp_path, lines)
    summary = watcher.run_once()
    assert summary.counts == {"ok": 1} and summary.uploaded == 2
    (sr_id,), (_sc_id,) = fake.modality("SR"), fake.modality("OT")
    sr = pydicom.dcmread(io.BytesIO(fake.files[sr_id]))
    assert sr.StudyInstanceUID == fake.tags[source]["StudyInstanceUID"]
    expected = measure_exam(calibrated, predictor=predictor, plane_check="on").result.measurement.hc_mm
    assert read_sr_measurements(sr)[HC]["value"] == pytest.approx(expected, abs=0.1)
    record = watcher.state.get(source)
    identity = watcher.identity
    assert record.status == "ok" and record.sr_uid == sr.SOPInstanceUID
    assert record.sr_uid == output_uid(
        fake.tags[source]["SOPInstanceUID"], identity.name, identity.weights_sha256, "sr"
    )
    assert record.sop_uid_sha256 == hash_uid(fake.tags[source]["SOPInstanceUID"])
    # the next pass sees our own SR and SC and skips them; nothing new is stored
    assert watcher.run_once().uploaded == 0 and len(fake.files) == 3
    text = "\n".join(lines) + (tmp_path / "state.sqlite").read_bytes().decode("latin-1")
    assert "PHANTOM" not in text and "SYNTH-PACS-4711" not in text  # no patient identifier in logs or state


def test_non_us_instance_is_skipped_and_recorded(fake, predictor, calibrated, tmp_path):
    ct = fake.add(_new_sop(calibrated, Modality="CT"))
    watcher = _watcher(fake, predictor, tmp_path)
    summary = watcher.run_once()
    assert summary.counts == {"skipped": 1} and fake.uploads == 0
    assert "modality CT" in watcher.state.get(ct).reason
    assert "GET /instances/ID/file" not in fake.requests  # not even downloaded


def test_uncalibrated_instance_gets_an_sr_without_mm(fake, predictor, image, tmp_path):
    source = fake.add(ultrasound_dicom_bytes(image, **PATIENT))
    watcher = _watcher(fake, predictor, tmp_path)
    assert watcher.run_once().counts == {"no_pixel_size": 1}
    (sr_id,) = fake.modality("SR")
    assert read_sr_measurements(pydicom.dcmread(io.BytesIO(fake.files[sr_id]))) == {}
    assert "pixel size" in watcher.state.get(source).reason


def test_corrupt_instance_is_recorded_and_the_others_go_on(fake, predictor, calibrated, tmp_path):
    tags = {"Modality": "US", "Manufacturer": "", "SOPInstanceUID": "1.2.3.4.5", "StudyInstanceUID": "1.2.3"}
    corrupt = fake.add(calibrated[:1000], tags=tags)  # truncated: header only
    garbage = fake.add(b"DICM" + bytes(200), tags={**tags, "SOPInstanceUID": "1.2.3.4.6"})
    good = fake.add(calibrated)
    watcher = _watcher(fake, predictor, tmp_path)
    summary = watcher.run_once()
    assert summary.counts == {"unreadable": 2, "ok": 1} and summary.uploaded == 2
    assert watcher.state.get(corrupt).status == watcher.state.get(garbage).status == "unreadable"
    assert watcher.state.get(corrupt).reason and watcher.state.get(good).status == "ok"
    assert watcher.state.cursor == 3


def test_connection_errors_then_success_lose_and_double_nothing(fake, predictor, calibrated, tmp_path):
    source = fake.add(calibrated)
    fake.failures = {"/changes": 2, "/instances/ID/file": 2, "/tools/lookup": 1, "/instances": 2}
    fake.store_then_timeout = 1  # the first upload is stored but its answer is lost
    watcher = _watcher(fake, predictor, tmp_path)
    summary = watcher.run_once()
    assert summary.counts == {"ok": 1}
    assert len(fake.modality("SR")) == 1 and len(fake.modality("OT")) == 1
    assert watcher.state.get(source).status == "ok" and watcher.state.cursor == 1


def test_orthanc_down_stops_the_pass_and_the_next_pass_resumes(fake, predictor, calibrated, tmp_path):
    source = fake.add(calibrated)
    fake.failures = {"/instances/ID/file": 10}
    watcher = _watcher(fake, predictor, tmp_path, retries=2)
    with pytest.raises(OrthancUnavailable, match="after 3 attempts"):
        watcher.run_once()
    assert watcher.state.cursor == 0 and watcher.state.get(source) is None  # not skipped, not lost
    fake.failures = {}
    assert watcher.run_once().counts == {"ok": 1}


def test_crash_after_upload_before_bookkeeping_does_not_upload_again(fake, predictor, calibrated, tmp_path):
    source = fake.add(calibrated)
    crashing = _watcher(fake, predictor, tmp_path)
    real_record = crashing.state.record

    def crash(record, *, seq=None):
        if record.orthanc_id == source:
            raise RuntimeError("power cut")
        real_record(record, seq=seq)

    crashing.state.record = crash
    with pytest.raises(RuntimeError, match="power cut"):
        crashing.run_once()
    assert fake.uploads == 2 and crashing.state.cursor == 0
    restarted = _watcher(fake, predictor, tmp_path)  # same state file, a new process
    summary = restarted.run_once()
    assert summary.counts == {"ok": 1} and summary.uploaded == 0 and summary.already_stored == 2
    assert fake.uploads == 2 and len(fake.files) == 3
    assert restarted.state.get(source).sr_uid == fake.tags[fake.modality("SR")[0]]["SOPInstanceUID"]


def test_fifty_instances_in_one_study(fake, predictor, calibrated, tmp_path, monkeypatch):
    exam = measure_exam(calibrated, predictor=predictor, plane_check="on")
    monkeypatch.setattr("fetometry.exam.measure_exam", lambda *a, **k: exam)
    sources = [fake.add(_new_sop(calibrated, InstanceNumber=i + 1)) for i in range(50)]
    watcher = _watcher(fake, predictor, tmp_path)
    watcher.page_size = 7  # several pages
    summary = watcher.run_once()
    assert summary.counts == {"ok": 50} and summary.uploaded == 100
    records = {r.orthanc_id: r for r in watcher.state.records()}
    assert all(records[s].status == "ok" for s in sources) and watcher.state.cursor == len(fake.changes) == 150
    assert len({records[s].sr_uid for s in sources}) == 50 and len({records[s].sc_uid for s in sources}) == 50
    srs = [pydicom.dcmread(io.BytesIO(fake.files[i]), stop_before_pixels=True) for i in fake.modality("SR")]
    assert len(srs) == 50 and len({sr.SeriesInstanceUID for sr in srs}) == 1  # one SR series per study
    assert len({sr.StudyInstanceUID for sr in srs}) == 1
    assert sum(watcher.state.counts().values()) == 150  # 50 sources + our 100 outputs, known as our own
    assert watcher.run_once().uploaded == 0


def test_cine_is_streamed_to_disk_and_measured(fake, predictor, image, tmp_path):
    frames = np.stack([np.roll(image, 2 * i, axis=1) for i in range(12)])
    cine = ultrasound_dicom_bytes(frames, pixel_size_mm=PIXEL_MM, frame_time_ms=33.3, **PATIENT)
    assert len(cine) > 4 * 65536
    source = fake.add(cine)
    client = _client(fake)
    path = client.download(source, tmp_path / "cine.dcm")
    assert path.read_bytes() == cine  # streamed in chunks, written to a file
    watcher = _watcher(fake, predictor, tmp_path)
    assert watcher.run_once().counts == {"ok": 1}
    sr = pydicom.dcmread(io.BytesIO(fake.files[fake.modality("SR")[0]]))
    assert HC in read_sr_measurements(sr)


# ---------------------------------------------------------------------- client and CLI


def test_wrong_password_stops_at_once_without_retrying(fake):
    fake.password = "other"
    client = _client(fake)
    with pytest.raises(OrthancAuthError, match="HTTP 401"):
        client.changes()
    assert len(fake.requests) == 1


def test_backoff_is_bounded_with_jitter(fake):
    delays = [_client(fake, backoff_s=0.5, max_backoff_s=4.0)._delay(a) for a in range(10)]
    assert all(0.25 <= d <= 4.0 for d in delays) and max(delays) > 2.0


def test_password_file(tmp_path):
    (tmp_path / "pw").write_text("s3cret \n")
    assert read_password_file(tmp_path / "pw") == "s3cret"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_password_file(tmp_path / "empty")


def test_cli_parses_watch_and_has_no_password_argument(monkeypatch):
    import fetometry.cli as cli

    parser = cli.build_parser()
    args = parser.parse_args(
        ["pacs", "watch", "--orthanc", "http://x:8042", "--once", "--username", "u", "--password-file", "f"]
    )
    assert args.pacs_verb == "watch" and args.once and args.password_file == "f" and args.state.endswith(".sqlite")
    with pytest.raises(SystemExit):
        parser.parse_args(["pacs", "watch", "--orthanc", "http://x", "--password", "secret"])
    with pytest.raises(SystemExit):
        parser.parse_args(["pacs"])  # the sub-verb is required


def test_cli_needs_username_and_password_file_together(monkeypatch, tmp_path, capsys):
    import fetometry.cli as cli

    code = cli.main(["pacs", "watch", "--orthanc", "http://127.0.0.1:9", "--once", "--username", "u"])
    assert code == 1 and "together" in capsys.readouterr().err


def test_state_survives_reopening(tmp_path):
    from fetometry.pacs.state import InstanceRecord

    state = WatchState(tmp_path / "s.sqlite")
    state.record(InstanceRecord("abc", "ok"), seq=7)
    state.advance(3)  # never backwards
    state.close()
    again = WatchState(tmp_path / "s.sqlite")
    assert again.cursor == 7 and again.get("abc").status == "ok" and again.counts() == {"ok": 1}
    assert json.dumps(again.counts())
