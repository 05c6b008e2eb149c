"""The fetometry command line: argument parsing only; the work lives in the Python API.

Exit status: 0 when something was done (even if some images could not be measured:
their rows say why), 1 when nothing could be done, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

from fetometry import DISCLAIMER, __version__
from fetometry.exam import add_measure_arguments  # numpy only: keeps the CLI quick to start

log = logging.getLogger("fetometry")

#: Verbs that live beside the code they drive: each module has ``register(subparsers)``,
#: which adds its parser and sets ``func``; heavy imports stay inside the verb's function.
VERB_MODULES: list[str] = [
    "fetometry.evaluation.benchmark",
    "fetometry.stream.command",
    "fetometry.serve.command",
    "fetometry.inference.export",
    "fetometry.explain.command",
]


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="shipped model name or weights folder; several, comma-separated, average their probabilities (an ensemble sharing one canvas) (default: the default model)",
    )
    parser.add_argument("--tta", action="store_true", help="average with a horizontally flipped prediction")
    parser.add_argument(
        "--plane-check",
        choices=("on", "off"),
        default="on",
        help="refuse images that are not a fetal head plane (SonoNet-16 + out-of-distribution score); "
        "off for research scoring, where the HC18 protocol scores every image (default on)",
    )


def _cmd_predict(args: argparse.Namespace) -> int:
    from fetometry.pipeline import OK, UNREADABLE, predict_path

    results = predict_path(
        args.input,
        args.out,
        model=args.model,
        pixel_size_mm=args.pixel_size,
        pixel_csv=args.pixel_csv,
        tta=args.tta,
        progress=not args.quiet,
        plane_check=args.plane_check,
    )
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    print(
        f"{len(results)} images -> {Path(args.out) / 'measurements.csv'}: "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    )
    if counts.get(OK, 0) < len(results):
        print("rows whose status is not 'ok' say why in the 'detail' column", file=sys.stderr)
    return 0 if counts.get(UNREADABLE, 0) < len(results) else 1


def _cmd_measure(args: argparse.Namespace) -> int:
    from fetometry.exam import run_measure_cli

    return run_measure_cli(args)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from fetometry.evaluation.evaluate import evaluate_dirs

    summary = evaluate_dirs(args.pred, args.truth, out_dir=args.out)
    mean = summary.get("mean", {})
    keys = ("dice", "iou", "recall", "precision", "hausdorff_mm", "hc_abs_difference_mm", "hc_difference_mm")
    parts = [f"{k} {mean[k]:.4f}" for k in keys if mean.get(k) is not None]
    if summary.get("map") is not None:
        parts.append(f"mAP {summary['map']:.4f}")
    print(", ".join(parts))
    print(f"wrote {Path(args.out or args.pred) / 'summary.json'} and metrics.csv")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from fetometry.training.config import TrainConfig
    from fetometry.training.run import train_and_export

    overrides = {"model": args.model}
    if args.variant:
        overrides["variant"] = args.variant
    if args.epochs:
        overrides["epochs"] = args.epochs
    if args.max_steps:
        overrides["max_steps"] = args.max_steps
    if args.init_from:
        overrides["init_from"] = args.init_from
    if args.folds:
        overrides.update(folds=args.folds, fold=args.fold)
    config = TrainConfig.from_file(args.config, **overrides) if args.config else TrainConfig.from_dict(overrides)
    folder = train_and_export(
        config, args.data[0] if len(args.data) == 1 else args.data, args.out, progress=not args.quiet
    )
    print(f"trained; weights folder {folder} (use it with --model {folder})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from fetometry.demo import run_demo

    outcome = run_demo(args.out, model=args.model, progress=not args.quiet)
    print(outcome["table"])
    print(f"\noverlay figure: {outcome['figure']}\nmeasurements:   {Path(args.out) / 'measurements.csv'}")
    print("Sample images: HC18 challenge (van den Heuvel et al. 2018, doi 10.5281/zenodo.1327317), CC BY 4.0.")
    print(DISCLAIMER)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from fetometry.models import available_models
    from fetometry.models.base import MODEL_KINDS

    registered = sorted(
        (s for kind in MODEL_KINDS for s in available_models(include_reference=True, kind=kind)),
        key=lambda s: (s.name, s.variant),
    )
    specs = [s for s in registered if args.name in (None, s.name) and args.variant in (None, s.variant)]
    if not specs:
        raise ValueError(
            f"no registered model {args.name or '*'}/{args.variant or '*'}; valid: {', '.join(f'{s.name}/{s.variant}' for s in registered)}"
        )
    timing = {
        "--repeats": args.repeats,
        "--sampler-steps": args.sampler_steps,
        "--sampler-ensemble": args.sampler_ensemble,
    }
    if not args.profile:
        given = [flag for flag, value in timing.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: only used with --profile (add it to measure)")
        rows = [s.summary() for s in specs]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print("| name | variant | kind | size divisor | description |\n|---|---|---|---|---|")
            for r in rows:
                kind = f"{r['kind']} (reference)" if r["reference"] else r["kind"]
                print(f"| {r['name']} | {r['variant']} | {kind} | {r['size_divisor']} | {r['description']} |")
        return 0
    from fetometry.evaluation.complexity import markdown_table, profile_models

    if args.name is None:  # every compared segmentation architecture, as the benchmark's table
        compared = {(s.name, s.variant) for s in available_models()}
        specs = [s for s in specs if (s.name, s.variant) in compared]
    rows = profile_models(
        specs,
        repeats=5 if args.repeats is None else args.repeats,
        sampler_steps=args.sampler_steps,
        sampler_ensemble=args.sampler_ensemble,
        progress=not (args.quiet or args.json),
    )
    print(json.dumps(rows, indent=2) if args.json else markdown_table(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fetometry", description="Automated fetal head biometry from 2D ultrasound. " + DISCLAIMER
    )
    parser.add_argument("--version", action="version", version=f"fetometry {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    verbs = parser.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("predict", help="segment and measure an image, a folder, or an HC18-layout folder")
    p.add_argument("input", help="image file, folder of images, or HC18-layout folder")
    p.add_argument("--out", required=True, help="output folder (measurements.csv, masks/)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--pixel-size", type=float, help="pixel size in mm for every image")
    size.add_argument("--pixel-csv", help="CSV with filename,pixel size(mm)")
    _add_model(p)
    p.set_defaults(func=_cmd_predict)

    p = verbs.add_parser("measure", help="measure one image")
    p.add_argument("image")
    p.add_argument("--pixel-size", type=float, help="pixel size in mm (without it: no mm values)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--overlay", type=Path, help="write the image with the fitted ellipse (PNG)")
    _add_model(p)
    add_measure_arguments(p)  # dating, report, explanation, uncertainty (fetometry.exam)
    p.set_defaults(func=_cmd_measure)

    p = verbs.add_parser("evaluate", help="score predictions against reference masks and HC")
    p.add_argument("--pred", required=True, help="a predict output folder")
    p.add_argument("--truth", required=True, help="HC18-layout (or images/masks folder) with references")
    p.add_argument("--out", help="where summary.json and metrics.csv go (default: --pred)")
    p.set_defaults(func=_cmd_evaluate)

    p = verbs.add_parser("train", help="train a model on an HC18-layout or folder data set")
    p.add_argument("--model", required=True, help="registered architecture name, e.g. attention-unet")
    p.add_argument("--variant", help="architecture variant (default from the config)")
    p.add_argument(
        "--data", required=True, action="append", help="HC18-layout or folder data set (repeat to combine several)"
    )
    p.add_argument("--config", help="recipe file (configs/*.toml)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, manifest, model/)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (smoke runs)")
    p.add_argument("--folds", type=int, help="subject-grouped k-fold: the number of folds (validation = one fold)")
    p.add_argument("--fold", type=int, default=0, help="with --folds: which fold to hold out (0..folds-1)")
    p.add_argument(
        "--init-from", help="start from these weights (weights folder or .safetensors) instead of random ones"
    )
    p.set_defaults(func=_cmd_train)

    p = verbs.add_parser(
        "models", help="list the registered models (instant); --profile: parameters, GMACs and CPU latency at 256x256"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="a JSON list of {name, variant, kind, reference, size_divisor, description}; "
        "with --profile of {name, variant, params, gflops, cpu_ms, inference, threads}",
    )
    p.add_argument("--name", help="only this model")
    p.add_argument("--variant", help="only this variant (e.g. compact)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="build and measure each model (minutes: the paper-size ones and the diffusion "
        "sampler are slow); without --name, the compared segmentation architectures",
    )
    p.add_argument("--repeats", type=int, help="with --profile: timed runs per model, median reported (default 5)")
    p.add_argument(
        "--sampler-steps",
        type=int,
        help="with --profile, diffusion models: sampler steps to time (default: the model's)",
    )
    p.add_argument(
        "--sampler-ensemble",
        type=int,
        help="with --profile, diffusion models: ensemble size to time (default: the model's)",
    )
    p.set_defaults(func=_cmd_models)

    p = verbs.add_parser("demo", help="run the default model on the bundled HC18 samples")
    p.add_argument("--out", default="demo_output", help="output folder")
    p.add_argument("--model", default=None, help="shipped model name or weights folder")
    p.set_defaults(func=_cmd_demo)

    for module_name in VERB_MODULES:
        importlib.import_module(module_name).register(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as error:
        # ValueError covers ImageReadError and PixelSizeError: messages say how to fix the input.
        print(f"fetometry {args.verb}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
