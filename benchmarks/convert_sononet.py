"""Convert the released SonoNet-16 weights (Lasagne arrays) to weights/sononet-16 once.

    .venv/bin/python benchmarks/convert_sononet.py [--npz ../shared/data/sononet/SonoNet16.npz]

Writes model.safetensors (float32), config.json and LICENSE (Apache-2.0, the authors')
into weights/sononet-16, then classifies the authors' 13 example frames with the
converted model in fetometry's own inference path (their crop, rows 115:734 and columns
81:874, removes the vendor text) and exits non-zero unless every frame gets the class
its file name says. The out-of-distribution statistics and the plane rule are added by
benchmarks/plane_check.py (they need HC18).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from fetometry.inference.plane import PlaneChecker, convert_sononet_npz
from fetometry.io.images import read_image
from fetometry.models import create_model

REPO = Path(__file__).resolve().parents[1]
SONONET = REPO.parent / "shared" / "data" / "sononet"
OUT = REPO / "weights" / "sononet-16"
#: File name of each example frame -> the released label it must get.
EXAMPLE_LABELS = {
    "3VV": "3VV",
    "4CH": "4CH",
    "ABDOMINAL": "Abdominal",
    "BRAIN-CB": "Brain (Cb.)",
    "BRAIN-TV": "Brain (Tv.)",
    "FEMUR": "Femur",
    "KIDNEYS": "Kidneys",
    "LIPS": "Lips",
    "LVOT": "LVOT",
    "PROFILE": "Profile",
    "RVOT": "RVOT",
    "SPINE-CORONAL": "Spine (cor.)",
    "SPINE-SAGITTAL": "Spine (sag.)",
}
#: The authors' crop of their example frames (rows, columns).
EXAMPLE_CROP = (slice(115, 734), slice(81, 874))


def classify_examples(checker: PlaneChecker, folder: Path) -> list[dict]:
    rows = []
    for stem, expected in EXAMPLE_LABELS.items():
        image = read_image(folder / f"{stem}.png")[EXAMPLE_CROP]
        result = checker.check(image)
        rows.append(
            dict(
                frame=stem,
                expected=expected,
                label=result.label,
                probability=round(result.probability, 4),
                correct=result.label == expected,
            )
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--npz", type=Path, default=SONONET / "SonoNet16.npz")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    model = create_model("sononet", "16")
    model.load_state_dict(convert_sononet_npz(args.npz, model))
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out / "model.safetensors"))
    config_path = args.out / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    config.update(
        model="sononet",
        variant="16",
        kind="plane-classifier",
        display_name="sononet-16",
        input_hw=list(model.input_hw),
        labels=list(model.labels),
        head_labels=list(model.head_labels),
        source="baumgach/SonoNet-weights commit 6c4df39 (SonoNet16.npz), Apache-2.0",
    )
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    shutil.copyfile(args.npz.parent / "LICENSE", args.out / "LICENSE")
    rows = classify_examples(PlaneChecker.from_weights(args.out), args.npz.parent / "example_frames")
    for row in rows:
        print(
            f"{row['frame']:15s} -> {row['label']:13s} p={row['probability']:.3f} {'ok' if row['correct'] else 'WRONG'}"
        )
    wrong = [row["frame"] for row in rows if not row["correct"]]
    print(f"{len(rows) - len(wrong)} of {len(rows)} example frames classified as labelled")
    return 1 if wrong else 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
