"""``fetometry measure IMAGE``: one exam (fetometry.exam) to text or JSON, with an optional overlay and PDF.

Exit status 0 when the image was analysed (the status says whether a head was measured),
1 when an asked-for feature is not installed; ValueErrors go to the CLI's handler.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fetometry import DISCLAIMER
from fetometry.cli.common import add_prediction_arguments
from fetometry.explain.methods import MAP_METHODS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("measure", help="measure one image")
    parser.add_argument("image")
    parser.add_argument("--pixel-size", type=float, help="pixel size in mm (without it: no mm values)")
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.add_argument("--overlay", type=Path, help="write the image with the fitted ellipse (PNG)")
    add_prediction_arguments(parser)
    dating = parser.add_mutually_exclusive_group()
    dating.add_argument("--ga-weeks", type=float, help="gestational age in weeks from dating (14-40); enables centiles")
    dating.add_argument("--lmp", help="first day of the last menstrual period, YYYY-MM-DD; enables centiles")
    parser.add_argument(
        "--ga-source",
        choices=("known", "crl", "ivf", "earlier_scan"),
        help="where --ga-weeks comes from (default: known)",
    )
    parser.add_argument("--exam-date", help="date of the scan, YYYY-MM-DD (default: today)")
    parser.add_argument("--report", type=Path, help="write a PDF report")
    parser.add_argument("--report-label", help="a label for the report header (e.g. an opaque exam id; never a name)")
    parser.add_argument(
        "--report-hide-filename", action="store_true", help="leave the image's file name out of the report"
    )
    parser.add_argument(
        "--explain",
        nargs="?",
        const="gradcam",
        choices=MAP_METHODS,
        help="add an explanation map (default method: gradcam)",
    )
    parser.add_argument(
        "--uncertainty", action="store_true", help="add the HC uncertainty (test-time augmentation spread)"
    )
    parser.add_argument("--frame", type=int, default=0, help="frame of a DICOM cine loop (default 0)")
    parser.add_argument(
        "--sr",
        type=Path,
        help="write a DICOM Comprehensive SR (TID 5000 OB-GYN ultrasound report) in the image's study; DICOM input only",
    )
    parser.add_argument("--fhir", type=Path, help="write an HL7 FHIR R4 Bundle of LOINC-coded Observations (JSON)")


def run(args: argparse.Namespace) -> int:
    """One exam -> text or JSON on stdout, and the files asked for (overlay, PDF, SR, FHIR).

    Exit status 0 when the image was analysed (the status says whether a head was
    measured); ValueErrors go to the CLI's handler, which prints them and exits 1.
    """
    from fetometry.exam import measure_exam
    from fetometry.inference.backend import build_predictor
    from fetometry.io.dicom import is_dicom

    if args.sr and not is_dicom(Path(args.image)):
        raise ValueError("--sr needs a DICOM input: an SR belongs to the image's study (use --fhir or --json)")
    # Explanation maps take gradients through the network, and MC-dropout uncertainty
    # switches its dropout layers on: both need the PyTorch model.
    backend = "torch" if args.explain or args.uncertainty else args.backend
    predictor = build_predictor(args.model, backend, tta=args.tta)
    exam = measure_exam(
        args.image,
        predictor=predictor,
        pixel_size_mm=args.pixel_size,
        ga_weeks=args.ga_weeks,
        lmp=args.lmp,
        ga_source=args.ga_source,
        exam_date=args.exam_date,
        explain=args.explain,
        uncertainty=args.uncertainty,
        frame=args.frame,
        plane_check=args.plane_check,
    )
    written = _write_outputs(exam, args) + _write_interchange(exam, predictor, args)
    _print_exam(exam, as_json=args.json)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _write_interchange(exam, predictor, args: argparse.Namespace) -> list[Path]:
    """The DICOM SR and the FHIR Bundle, both citing the model's name, version and weights digest."""
    if not (args.sr or args.fhir):
        return []
    from fetometry.io.dicom import is_dicom
    from fetometry.provenance import model_identity

    identity = model_identity(predictor)
    written = []
    if args.sr:
        from fetometry.report.dicom_sr import write_sr

        written.append(write_sr(exam, args.image, args.sr, frame=args.frame, **identity.as_kwargs()))
    if args.fhir:
        from fetometry.report.fhir import write_fhir

        image_uid = _sop_instance_uid(args.image) if is_dicom(Path(args.image)) else None
        written.append(
            write_fhir(
                exam, args.fhir, model_name=identity.name, model_version=identity.version, image_reference=image_uid
            )
        )
    return written


def _sop_instance_uid(path: str) -> str | None:
    import pydicom

    header = pydicom.dcmread(path, stop_before_pixels=True)
    uid = header.get("SOPInstanceUID")
    return str(uid) if uid else None


def _write_outputs(exam, args: argparse.Namespace) -> list[Path]:
    import cv2

    written = []
    overlay = args.overlay
    if overlay:
        overlay = Path(overlay)
        images = [(overlay, exam.overlay_rgb())]
        if exam.explanation is not None:
            images.append((overlay.with_name(f"{overlay.stem}_{exam.explain_method}.png"), exam.explanation_rgb()))
        for path, rgb in images:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {path}")
            written.append(path)
    if args.report:
        written.append(
            exam.write_report(args.report, label=args.report_label, show_filename=not args.report_hide_filename)
        )
    return written


def _print_exam(exam, *, as_json: bool) -> None:
    row = exam.to_json()
    if as_json:
        print(json.dumps(row, indent=2))
        return
    print(summary_line(row))
    for key, label in (
        ("ga_hadlock_weeks", "GA from HC (Hadlock)"),
        ("ga_intergrowth_weeks", "GA from HC (INTERGROWTH-21st)"),
    ):
        if row.get(key) is not None:
            print(f"  {label}: {row[key]:.1f} weeks")
    if row.get("hc_centile") is not None:
        print(
            f"  HC at {row['ga_weeks']:.1f} weeks ({row['ga_source']}): centile {row['hc_centile']:.1f}, z {row['hc_z']:+.2f}"
        )
    if row.get("hc_sd_mm") is not None:
        print(f"  HC uncertainty: +/- {row['hc_sd_mm']:.1f} mm (1 SD)")
    for flag in row.get("flags") or []:
        print(f"  [{flag.get('severity', '')}] {flag.get('message', '')}")
    for note in row.get("notes") or []:
        print(f"  note: {note}")
    print(DISCLAIMER)


def summary_line(row: dict) -> str:
    """'name: HC 165.2 mm, BPD ...' or 'name: status: detail'."""
    from fetometry.pipeline import OK

    if row.get("status") == OK and row.get("hc_mm") is not None:
        return f"{row['filename']}: HC {row['hc_mm']:.1f} mm, BPD {row['bpd_mm']:.1f} mm, OFD {row['ofd_mm']:.1f} mm, cephalic index {row['cephalic_index']:.1f}"
    return f"{row['filename']}: {row['status']}: {row['detail']}"
