"""fetometry pacs watch against a REAL Orthanc (``/usr/sbin/Orthanc``), started per module on loopback.

Orthanc runs from a JSON config in a temporary folder (storage and index there, a free
loopback port, no DICOM server, no remote access, basic auth with one test user) and is
stopped in teardown. Skipped when the binary is missing (``apt-get install orthanc``).
The default model is loaded once per module; the CLI is given that predictor.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pydicom
import pytest

from fetometry.exam import measure_exam
from fetometry.inference.predictor import Predictor
from fetometry.io.dicom import ultrasound_dicom_bytes
from fetometry.io.images import read_image
from fetometry.report.dicom_sr import read_sr_measurements
from fetometry.resources import SAMPLES_DIR

ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
pytestmark = pytest.mark.skipif(ORTHANC is None, reason="Orthanc is not installed (apt-get install orthanc)")

SAMPLE = SAMPLES_DIR / "training_set" / "345_HC.png"
PIXEL_MM = 0.130960682505
USER, PASSWORD = "test", "secret"
HC = "11984-2"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    folder = tmp_path_factory.mktemp("orthanc")
    port = _free_port()
    config = {
        "Name": "fetometry-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [],
    }
    (folder / "config.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("wb")
    process = subprocess.Popen([ORTHANC, str(folder / "config.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/system", auth=(USER, PASSWORD), timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"Orthanc did not start: {(folder / 'orthanc.log').read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    (folder / "password").write_text(PASSWORD + "\n")
    (folder / "wrong").write_text("not-the-password\n")
    yield {"url": url, "folder": folder}
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_weights()


@pytest.fixture
def cli(monkeypatch, predictor):
    """``fetometry ...`` in-process, with "pacs" registered and the module's predictor reused."""
    import fetometry.cli as cli_module

    monkeypatch.setattr(Predictor, "from_weights", classmethod(lambda cls, *a, **k: predictor))
    return cli_module.main


def _get(orthanc, path: str):
    response = httpx.get(orthanc["url"] + path, auth=(USER, PASSWORD), timeout=10)
    response.raise_for_status()
    return response.json() if "json" in response.headers.get("content-type", "") else response.content


def _watch_args(orthanc, password_file: str = "password") -> list[str]:
    folder = orthanc["folder"]
    return [
        "pacs",
        "watch",
        "--orthanc",
        orthanc["url"],
        "--once",
        "--username",
        USER,
        "--password-file",
        str(folder / password_file),
        "--state",
        str(folder / "state.sqlite"),
    ]


def test_end_to_end_sr_and_sc_land_in_the_study_and_a_rerun_adds_nothing(orthanc, cli, predictor, capsys):
    data = ultrasound_dicom_bytes(
        read_image(SAMPLE), pixel_size_mm=PIXEL_MM, patient_name="PHANTOM^ORTHANC", patient_id="SYNTH-ORTHANC-1"
    )
    answer = httpx.post(f"{orthanc['url']}/instances", content=data, auth=(USER, PASSWORD), timeout=10).json()
    study = answer["ParentStudy"]

    assert cli(_watch_args(orthanc)) == 0
    out, err = capsys.readouterr()
    assert "ok 1" in out and "2 uploaded" in out
    assert "PHANTOM" not in out + err and "SYNTH-ORTHANC" not in out + err

    instances = _get(orthanc, f"/studies/{study}/instances")
    modalities = sorted(_get(orthanc, f"/instances/{i['ID']}/simplified-tags")["Modality"] for i in instances)
    assert modalities == ["OT", "SR", "US"]
    (sr_id,) = [
        i["ID"] for i in instances if _get(orthanc, f"/instances/{i['ID']}/simplified-tags")["Modality"] == "SR"
    ]
    sr = pydicom.dcmread(io.BytesIO(_get(orthanc, f"/instances/{sr_id}/file")))
    hc = read_sr_measurements(sr)[HC]
    expected = measure_exam(data, predictor=predictor, plane_check="on").result.measurement.hc_mm
    assert hc["unit"] == "mm" and hc["value"] == pytest.approx(expected, abs=0.1)

    total = len(_get(orthanc, "/instances"))
    assert cli(_watch_args(orthanc)) == 0  # the second pass sees only our own outputs
    assert "0 uploaded" in capsys.readouterr().out
    assert len(_get(orthanc, "/instances")) == total and len(_get(orthanc, f"/studies/{study}/instances")) == 3


def test_wrong_password_is_a_clear_quick_error(orthanc, cli, capsys):
    started = time.monotonic()
    code = cli(_watch_args(orthanc, "wrong"))
    err = capsys.readouterr().err
    assert code == 2 and "refused the credentials" in err and "HTTP 401" in err
    assert "not-the-password" not in err
    assert time.monotonic() - started < 5
