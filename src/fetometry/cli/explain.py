"""``fetometry explain``: class-activation maps, occlusion and uncertainty for an image; ``--evaluate``: the checks."""

from __future__ import annotations

import argparse
from pathlib import Path

from fetometry.explain.methods import VERB_METHODS

USAGE = """
    fetometry explain IMAGE --model NAME --method gradcam|gradcampp|hirescam|occlusion|uncertainty --out DIR
    fetometry explain DATA --evaluate --model NAME --out DIR [--limit 50]

One image: DIR/<stem>_<method>.png (the map blended over the image with the predicted ellipse)
and DIR/<stem>_<method>.npy (the map on the original grid). --evaluate: the faithfulness and
sanity checks of fetometry.explain.quality over the images the model never trained on.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "explain",
        help="class-activation maps, occlusion and uncertainty for an image; --evaluate: faithfulness checks",
        description=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "input", help="an image file; with --evaluate an HC18-layout (or images/masks) folder with annotations"
    )
    p.add_argument("--model", default=None, help="shipped model name or weights folder (default: the default model)")
    p.add_argument(
        "--method",
        default=None,
        help=f"one or more of {', '.join(VERB_METHODS)} (comma-separated), or all (default: gradcam; with --evaluate: all map methods)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--target",
        choices=("region", "boundary"),
        default="region",
        help="explain the head region or only its boundary band",
    )
    p.add_argument("--layer", help="target layer (dotted module path; default: the architecture's cam_target_layer)")
    p.add_argument(
        "--network",
        choices=("condition", "denoiser"),
        help="MedSegDiff-V2: explain the condition U-Net (default) or the denoiser at the last sampling step",
    )
    p.add_argument("--pixel-size", type=float, help="pixel size in mm (uncertainty in mm; without it: px)")
    p.add_argument(
        "--evaluate",
        action="store_true",
        help="run the faithfulness and sanity checks over a data set and write a table",
    )
    p.add_argument(
        "--split",
        choices=("val", "all"),
        default="val",
        help="--evaluate: the model's validation split (default) or all images",
    )
    p.add_argument(
        "--limit", type=int, default=50, help="--evaluate: images, spread evenly over the split (default 50)"
    )
    p.add_argument("--steps", type=int, default=10, help="--evaluate: deletion / insertion steps (default 10)")
    p.add_argument("--stages", type=int, default=4, help="--evaluate: cascading randomisation stages (default 4)")
    p.add_argument(
        "--occlusion-images",
        type=int,
        default=10,
        help="--evaluate: occlusion on the first N images only (default 10; it costs ~80 passes per map)",
    )


def run(args: argparse.Namespace) -> int:
    if args.evaluate:
        return _run_evaluation(args)
    from fetometry.explain.jobs import describe_hc, parse_methods, write_explanations
    from fetometry.inference.predictor import Predictor
    from fetometry.io.images import read_image
    from fetometry.io.pixel_size import validate_pixel_size

    path = Path(args.input)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image (use --evaluate for a data-set folder)")
    methods = parse_methods(args.method or "gradcam")
    pixel_size = validate_pixel_size(args.pixel_size, source="--pixel-size") if args.pixel_size is not None else None
    predictor = Predictor.from_weights(args.model)
    image = read_image(path)
    for entry in write_explanations(
        predictor,
        image,
        path.stem,
        args.out,
        methods,
        pixel_size_mm=pixel_size,
        target=args.target,
        layer=args.layer,
        network=args.network,
    ):
        extra = f"  {describe_hc(entry)}" if entry["method"] == "uncertainty" else ""
        print(f"{entry['method']}: {entry['png']} and {Path(entry['npy']).name}{extra}")
    from fetometry import DISCLAIMER

    print(DISCLAIMER)
    return 0


def _run_evaluation(args: argparse.Namespace) -> int:
    from fetometry.explain.jobs import calibration_table, evaluate_dataset, explain_table

    methods = [args.method] if args.method else None  # default: every map method
    report, paths = evaluate_dataset(
        args.input,
        args.out,
        model=args.model,
        split=args.split,
        limit=args.limit,
        methods=methods,
        network=args.network,
        layer=args.layer,
        steps=args.steps,
        stages=args.stages,
        occlusion_images=args.occlusion_images,
        progress=not args.quiet,
    )
    print(explain_table([report]))
    print()
    print(calibration_table([report]))
    print(f"\nwrote {paths['json']}, {paths['csv'].name} and {paths['md'].name}")
    return 0
