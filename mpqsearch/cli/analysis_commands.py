"""Commands on results: ``report``, ``export``, ``apply`` (:mod:`mpqsearch.analysis` does the work)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..quant.spec import EXPORT_TARGETS
from .output import CliError, print_table
from .workload_commands import LATENCY_HELP, TARGET_HELP, load_workload, parse_uniform


def _results(args: argparse.Namespace, source: str | None = None) -> Any:
    from ..analysis import load_results

    return load_results(source or args.source, directory=args.directory, study=args.study, config=args.config)


def cmd_report(args: argparse.Namespace) -> None:
    from ..analysis.baselines import evaluate_uniform
    from ..analysis.report import write_report

    results = _results(args)
    compare = {source: _results(args, source) for source in args.compare}
    baselines = evaluate_uniform(results, [parse_uniform(text) for text in args.uniform]) if args.uniform else []
    print(f"wrote {write_report(results, args.output, compare=compare, baselines=baselines)}")


def cmd_export(args: argparse.Namespace) -> None:
    from ..analysis.export import picked_policy, write_onnx
    from ..analysis.pick import PickError, pick
    from ..policy import save_policy

    results = _results(args)
    try:
        row = pick(results, args.pick)
        policy = picked_policy(results, row, args.pick)
    except PickError as err:
        raise CliError(str(err)) from None
    metrics = ", ".join(f"{o.metric} {row.metrics[o.metric]:.4g}" for o in results.objectives
                        if o.metric in row.metrics)
    print(f"trial {row.number} ({row.strategy}): {metrics}")
    print(f"wrote {save_policy(policy, args.output)}")
    if args.onnx:
        print(f"wrote {write_onnx(policy, load_workload(results.config.workload), args.onnx, args.target)}")


def cmd_apply(args: argparse.Namespace) -> None:
    from ..analysis.reapply import reapply
    from ..policy import PolicyError, load_policy

    try:
        policy = load_policy(args.policy)
    except PolicyError as err:
        raise CliError(str(err)) from None
    workload = args.workload or policy.provenance.get("workload")
    if not workload:
        raise CliError(f"{args.policy}: no workload in its provenance; pass --workload")
    workload = load_workload(workload)
    try:
        policy = load_policy(args.policy, workload.build_model())  # refused, naming the file, if for another model
    except PolicyError as err:
        raise CliError(str(err)) from None
    checks = reapply(policy, workload, latency=args.latency)
    print_table([{"metric": c.name, "recorded": f"{c.recorded:.6g}",
                  "measured": "-" if c.measured is None else f"{c.measured:.6g}",
                  "difference": "-" if c.measured is None else f"{c.measured - c.recorded:+.3g}",
                  "status": "ok" if c.ok else "DIFFERS"} for c in checks])
    differ = [c.name for c in checks if not c.ok]
    if differ:
        print(f"{len(differ)} of {len(checks)} recorded metrics differ beyond noise: {', '.join(differ)}")
        raise SystemExit(1)
    print(f"all {len(checks)} recorded metrics reproduce within noise")


def add_commands(sub: argparse._SubParsersAction) -> None:
    def source_arguments(command: argparse.ArgumentParser) -> None:
        command.add_argument("source", help="experiment ID, or Optuna storage URL / journal file")
        command.add_argument("--directory", help="where experiments keep their files")
        command.add_argument("--study", help="study name in an Optuna storage (if it holds several)")
        command.add_argument("--config", type=Path, help="experiment file, for a storage without one beside it")

    report = sub.add_parser("report", help="write a self-contained HTML report of an experiment")
    source_arguments(report)
    report.add_argument("-o", "--output", type=Path, default=Path("report.html"))
    report.add_argument("--compare", nargs="*", default=[], metavar="SOURCE",
                        help="other experiments on the hypervolume chart")
    report.add_argument("--uniform", action="append", metavar="W/A",
                        help="also evaluate this uniform precision as a baseline if no trial ran it (repeatable)")
    report.set_defaults(func=cmd_report)
    export = sub.add_parser("export", help="write the policy of the trial a rule picks")
    source_arguments(export)
    export.add_argument("--pick", required=True, metavar="RULE",
                        help="best:METRIC, min:METRIC where COND (e.g. min:size_ratio where psnr_drop<=0.1), "
                             "max:METRIC where COND, or knee")
    export.add_argument("-o", "--output", type=Path, required=True)
    export.add_argument("--onnx", type=Path, help="also write the QDQ ONNX model")
    export.add_argument("--target", choices=EXPORT_TARGETS, help=TARGET_HELP + " (default: the experiment's)")
    export.set_defaults(func=cmd_export)
    apply = sub.add_parser("apply", help="re-evaluate a policy and compare with its recorded metrics")
    apply.add_argument("policy", type=Path)
    apply.add_argument("--workload", help="default: the workload in the policy's provenance")
    apply.add_argument("--latency", help=LATENCY_HELP + " (default: the backend that measured it)")
    apply.set_defaults(func=cmd_apply)
