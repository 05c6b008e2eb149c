"""``fetometry models``: list the registry (instant); ``--profile`` builds and measures each model."""

from __future__ import annotations

import argparse
import json

PROFILE_FLAGS = {"--repeats": "repeats", "--sampler-steps": "sampler_steps", "--sampler-ensemble": "sampler_ensemble"}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
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


def _selected_specs(args: argparse.Namespace) -> list:
    from fetometry.models import available_models
    from fetometry.models.base import MODEL_KINDS

    registered = sorted(
        (s for kind in MODEL_KINDS for s in available_models(include_reference=True, kind=kind)),
        key=lambda s: (s.name, s.variant),
    )
    specs = [s for s in registered if args.name in (None, s.name) and args.variant in (None, s.variant)]
    if not specs:
        valid = ", ".join(f"{s.name}/{s.variant}" for s in registered)
        raise ValueError(f"no registered model {args.name or '*'}/{args.variant or '*'}; valid: {valid}")
    return specs


def _print_listing(specs: list, *, as_json: bool) -> None:
    rows = [s.summary() for s in specs]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print("| name | variant | kind | size divisor | description |\n|---|---|---|---|---|")
    for r in rows:
        kind = f"{r['kind']} (reference)" if r["reference"] else r["kind"]
        print(f"| {r['name']} | {r['variant']} | {kind} | {r['size_divisor']} | {r['description']} |")


def run(args: argparse.Namespace) -> int:
    specs = _selected_specs(args)
    if not args.profile:
        given = [flag for flag, name in PROFILE_FLAGS.items() if getattr(args, name) is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: only used with --profile (add it to measure)")
        _print_listing(specs, as_json=args.json)
        return 0
    from fetometry.evaluation.complexity import profile_models, profile_table
    from fetometry.models import available_models

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
    print(json.dumps(rows, indent=2) if args.json else profile_table(rows))
    return 0
