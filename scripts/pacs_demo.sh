#!/usr/bin/env bash
# make pacs-demo: the PACS loop on one machine, in a temporary folder, nothing left behind.
#   Orthanc on loopback (temporary config, storage and random password)
#   -> the bundled HC18 samples as synthetic calibrated ultrasound DICOMs in one phantom study
#   -> fetometry pacs watch --once -> the study's instances (US + SR + SC) -> Orthanc stopped.
# PACS_DEMO_KEEP=1 keeps Orthanc running (its web address printed) until you press Enter.
# Synthetic phantom data only; decision support, never diagnosis.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
ORTHANC_BIN=${ORTHANC_BIN:-$(command -v Orthanc || echo /usr/sbin/Orthanc)}
if [[ ! -x "$ORTHANC_BIN" ]]; then
  echo "pacs-demo: Orthanc not found (apt-get install orthanc; the system service need not run)" >&2
  exit 1
fi
[[ -x "$PY" ]] || { echo "pacs-demo: run 'make setup' first" >&2; exit 1; }

WORK=$(mktemp -d -t fetometry-pacs-demo.XXXXXX)
ORTHANC_PID=""
cleanup() {
  if [[ -n "$ORTHANC_PID" ]] && kill -0 "$ORTHANC_PID" 2>/dev/null; then
    kill "$ORTHANC_PID" && wait "$ORTHANC_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$PY" -c 'import secrets; print(secrets.token_urlsafe(18))' > "$WORK/password"
chmod 600 "$WORK/password"
"$PY" - "$WORK" "$PORT" <<'PYEOF'
import json, sys
from pathlib import Path
work, port = Path(sys.argv[1]), int(sys.argv[2])
config = {
    "Name": "fetometry-pacs-demo",
    "StorageDirectory": str(work / "storage"),
    "IndexDirectory": str(work / "index"),
    "HttpPort": port,
    "DicomServerEnabled": False,
    "RemoteAccessAllowed": False,
    "AuthenticationEnabled": True,
    "RegisteredUsers": {"demo": (work / "password").read_text().strip()},
    "Plugins": [],
}
(work / "config.json").write_text(json.dumps(config, indent=2))
PYEOF

"$ORTHANC_BIN" "$WORK/config.json" > "$WORK/orthanc.log" 2>&1 &
ORTHANC_PID=$!
URL="http://127.0.0.1:$PORT"
export URL WORK
"$PY" - <<'PYEOF'
import os, sys, time
import httpx
url, password = os.environ["URL"], open(os.environ["WORK"] + "/password").read().strip()
for _ in range(200):
    try:
        if httpx.get(url + "/system", auth=("demo", password), timeout=1).status_code == 200:
            break
    except httpx.TransportError:
        pass
    time.sleep(0.1)
else:
    sys.exit("pacs-demo: Orthanc did not start; see its log")
PYEOF
echo "pacs-demo: Orthanc $("$ORTHANC_BIN" --version | head -1 | awk '{print $2}') at $URL (loopback only, basic auth)"

# The bundled samples, each at its pixel size from the HC18 CSV, as one phantom study.
STUDY=$("$PY" - <<'PYEOF'
import csv, io, os
import httpx, pydicom
from pydicom.uid import generate_uid
from fetometry.io.dicom import ultrasound_dicom_bytes
from fetometry.io.images import read_image
from fetometry.resources import SAMPLES_DIR
url, password = os.environ["URL"], open(os.environ["WORK"] + "/password").read().strip()
sizes = {r["filename"]: float(r["pixel size(mm)"]) for r in csv.DictReader(open(SAMPLES_DIR / "training_set_pixel_size_and_HC.csv"))}
study_uid, series_uid, study = generate_uid(), generate_uid(), None
for number, png in enumerate(sorted((SAMPLES_DIR / "training_set").glob("*_HC.png")), start=1):
    data = ultrasound_dicom_bytes(read_image(png), pixel_size_mm=sizes[png.name],
                                  patient_name="PHANTOM^PACS^DEMO", patient_id="SYNTH-DEMO-0001")
    dataset = pydicom.dcmread(io.BytesIO(data))
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.InstanceNumber = study_uid, series_uid, number
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    answer = httpx.post(url + "/instances", content=buffer.getvalue(), auth=("demo", password), timeout=30).json()
    study = answer["ParentStudy"]
    print(f"pacs-demo: uploaded {png.name} ({sizes[png.name]:.4f} mm/px) as US instance {number}", file=os.sys.stderr)
print(study)
PYEOF
)

# `fetometry pacs watch` (a shim registers the verb while cli/__init__.py does not list it yet)
if .venv/bin/fetometry pacs --help >/dev/null 2>&1; then
  WATCH=(.venv/bin/fetometry)
else
  WATCH=("$PY" -c 'import sys, fetometry.cli as c; c.VERBS += ("pacs",); sys.exit(c.main(sys.argv[1:]))')
fi
echo "pacs-demo: fetometry pacs watch --orthanc $URL --once --username demo --password-file <tmp> --state <tmp>"
"${WATCH[@]}" pacs watch --orthanc "$URL" --once --username demo --password-file "$WORK/password" \
  --state "$WORK/state.sqlite"

"$PY" - "$STUDY" <<'PYEOF'
import os, sys
import httpx
url, password, study = os.environ["URL"], open(os.environ["WORK"] + "/password").read().strip(), sys.argv[1]
auth = ("demo", password)
instances = httpx.get(f"{url}/studies/{study}/instances", auth=auth, timeout=30).json()
print(f"pacs-demo: study {study} now holds {len(instances)} instances:")
rows = []
for item in instances:
    tags = httpx.get(f"{url}/instances/{item['ID']}/simplified-tags", auth=auth, timeout=30).json()
    modality, extra = tags.get("Modality", "?"), ""
    if modality == "SR":
        import io, pydicom
        from fetometry.report.dicom_sr import read_sr_measurements
        sr = pydicom.dcmread(io.BytesIO(httpx.get(f"{url}/instances/{item['ID']}/file", auth=auth, timeout=30).content))
        hc = read_sr_measurements(sr).get("11984-2")
        extra = f"  HC {hc['value']:.1f} {hc['unit']}" if hc else "  (no mm)"
    order = {"US": 0, "SR": 1}.get(modality, 2)
    rows.append((int(tags.get("InstanceNumber") or 0), order, modality, tags.get("SeriesDescription") or "source image", extra))
for number, _, modality, description, extra in sorted(rows):
    print(f"  #{number:<2} {modality:3} {description}{extra}")
print(f"pacs-demo: Orthanc Explorer: {url}/app/explorer.html#study?uuid={study} (user demo, password in {os.environ['WORK']}/password)")
PYEOF

if [[ "${PACS_DEMO_KEEP:-0}" == "1" ]]; then
  read -r -p "pacs-demo: Orthanc keeps running; press Enter to stop it and delete the demo folder " _
fi
echo "pacs-demo: stopping Orthanc; the temporary folder is removed"
