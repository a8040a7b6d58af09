"""The ``mpqsearch`` command."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .experiments.config import ConfigError, ExperimentConfig
from .policy import Policy, PolicyError, load_policy
from .quant.spec import EXPORT_TARGETS, check_bits
from .search_spaces import SearchSpace
from .search_spaces.costs import model_size_bytes
from .specs import load_callable
from .strategies import strategy_names
from .trials.evaluate import Evaluator, TrialError, TrialResult
from .trials.latency import backend_options, latency_backend_names
from .trials.refine import DEFAULT_LR
from .workloads import Workload, get_workload, workload_names


class CliError(Exception):
    """A user mistake on the command line; printed as one line, exit status 2."""


def _workload(spec: str) -> Workload:
    try:
        return get_workload(spec)
    except ValueError as err:
        raise CliError(str(err)) from None


def load_model(spec: str, input_shape: str | None) -> tuple[nn.Module, torch.Tensor]:
    """The model and example input named by a built-in workload, a ``module:function`` returning
    a :class:`Workload`, or a ``module:factory`` returning a module (then ``--input-shape`` is needed)."""
    if ":" not in spec:
        workload = _workload(spec)
        return workload.build_model().eval(), workload.example_input
    try:
        built = load_callable(spec, "model")()
    except ValueError as err:
        raise CliError(str(err)) from None
    if isinstance(built, Workload):
        return built.build_model().eval(), built.example_input
    if not isinstance(built, nn.Module):
        raise CliError(f"model {spec!r}: the factory returned {type(built).__name__}, not a torch.nn.Module")
    if input_shape is None:
        raise CliError(f"model {spec!r}: --input-shape is needed for a model factory")
    return built.eval(), torch.randn(parse_shape(input_shape))


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise CliError(f"--input-shape {text!r}: expected positive integers separated by commas, e.g. 1,3,64,64")
    return shape


def parse_uniform(text: str) -> tuple[int, int]:
    weight, sep, act = text.partition("/")
    try:
        if not sep:
            raise ValueError("expected W/A")
        return check_bits(int(weight)), check_bits(int(act))
    except ValueError as err:
        raise CliError(f"--uniform {text!r}: {err} (e.g. 8/8 or 4/8)") from None


def _format_table(rows: list[dict[str, object]], columns: Sequence[str]) -> str:
    cells = [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) if v.replace(".", "").replace("-", "").isdigit() else v.ljust(w)
                        for v, w in zip(r, widths)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def cmd_layers(args: argparse.Namespace) -> None:
    model, example = load_model(args.model, args.input_shape)
    space = SearchSpace.from_model(model, example)
    if args.json:
        print(json.dumps([layer.to_dict() for layer in space.layers], indent=2))
        return
    rows = [{
        "layer": layer.name,
        "kind": layer.kind + ("/dw" if layer.depthwise else ""),
        "in": layer.in_channels,
        "out": layer.out_channels,
        "kernel": "x".join(map(str, layer.kernel_size)) or "-",
        "params": layer.params,
        "MACs": layer.macs,
        "stage": layer.stage,
        "tied": layer.tied_group or "-",
        "act": {True: "unsigned", False: "signed", None: "from data"}[layer.act_unsigned],
    } for layer in space.layers]
    print(_format_table(rows, list(rows[0])))
    total_macs = sum(layer.macs for layer in space.layers)
    print(f"\n{len(rows)} quantizable layers, {sum(r['params'] for r in rows)} parameters in them, "
          f"{space.other_params} elsewhere, {total_macs} MACs for input {list(example.shape)}")


def _policy_for(args: argparse.Namespace, space: SearchSpace) -> Policy:
    try:
        if args.policy:
            return load_policy(args.policy, space)
    except PolicyError as err:
        raise CliError(str(err)) from None
    weight, act = parse_uniform(args.uniform) if args.uniform else (32, 32)
    return Policy.uniform(space, weight, act)


def _print_result(result: TrialResult, workload: Workload) -> None:
    rows = [{"metric": name, "value": f"{value:.4f}", "fp32": f"{result.reference[name]:.4f}",
             "drop": f"{result.drops[name]:+.4f}", "direction": workload.directions.get(name, "-"),
             "baseline": f"{workload.baselines[name]:.4f}" if name in workload.baselines else "-"}
            for name, value in result.metrics.items()]
    print(_format_table(rows, list(rows[0])))
    print(f"\nsize     {result.size_bytes} bytes ({100 * result.size_ratio:.2f} % of FP32)")
    print(f"BOPs     {result.bops:.4g} ({100 * result.bops_ratio:.2f} % of FP32)")
    if result.latency is not None:
        lat = result.latency
        print(f"latency  {lat.median_ms:.3f} ms median ({lat.backend}, {lat.method}, {lat.threads} thread(s), "
              f"{lat.runs} runs, IQR {lat.iqr_ms:.3f} ms)")
    print("timings  " + ", ".join(f"{step} {seconds:.3f} s" for step, seconds in result.timings.items()))


def cmd_evaluate(args: argparse.Namespace) -> None:
    workload = _workload(args.workload)
    try:
        evaluator = Evaluator(workload, latency=args.latency,
                              latency_options=backend_options(args.latency, args.threads, args.target))
    except ValueError as err:  # a latency option the backend does not take
        raise CliError(str(err)) from None
    result = evaluator.evaluate(_policy_for(args, evaluator.space))
    if args.json:
        print(json.dumps({**result.to_dict(), "directions": workload.directions, "baselines": workload.baselines},
                         indent=2))
    else:
        _print_result(result, workload)


def cmd_export_onnx(args: argparse.Namespace) -> None:
    from .apply import apply_policy
    from .quant.export import export_onnx

    workload = _workload(args.workload)
    model = workload.build_model().eval()
    try:
        policy = load_policy(args.policy, model)
    except PolicyError as err:
        raise CliError(str(err)) from None
    path = export_onnx(apply_policy(model, policy, workload.calib_data), workload.example_input, args.output,
                       target=args.target)
    print(f"wrote {path}")


def parse_strategy_args(items: Sequence[str]) -> dict[str, object]:
    """``KEY=VALUE`` options of a strategy, each value read as YAML (``3``, ``[[8, 8], [4, 8]]``)."""
    import yaml

    options: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--arg {item!r}: expected KEY=VALUE, e.g. threshold=2")
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise CliError(f"--arg {item!r}: the value is not YAML: {err}") from None
    return options


def cmd_seed(args: argparse.Namespace) -> None:
    from .policy import save_policy
    from .strategies import StrategyContext, get_strategy

    workload = _workload(args.workload)
    try:
        strategy = get_strategy(args.strategy, **parse_strategy_args(args.arg))
    except ValueError as err:
        raise CliError(str(err)) from None
    evaluator = Evaluator(workload, latency="none")
    context = StrategyContext(evaluator.space, evaluator)
    scores = strategy.scores(context)
    seeds = strategy.seed(context)
    pruned = strategy.prune(context)
    results = [evaluator.evaluate(policy, measure_latency=False) if args.evaluate else None for policy in seeds]
    files = []
    for i, (policy, result) in enumerate(zip(seeds, results)):
        policy.provenance.update({"strategy": strategy.name, "workload": workload.name})
        if result is not None:
            policy.metrics.update(result.flat_metrics())
        if args.output:
            files.append(str(save_policy(policy, args.output / f"{strategy.name}-{i}.yaml")))
    space = evaluator.space
    layers = [{
        "layer": n, "stage": space.layer(n).stage, "score": scores.get(n),
        "bits": [[policy.layers[n].weight_bits, policy.layers[n].act_bits] for policy in seeds],
        "weight_choices": list(pruned.weight_choices[n]), "act_choices": list(pruned.act_choices[n]),
        "pruned": (pruned.weight_choices[n], pruned.act_choices[n]) != (space.weight_choices[n], space.act_choices[n]),
    } for n in space.names]
    summary = [{"seed": i, "size_ratio": model_size_bytes(space, policy) / evaluator.fp32_size,
                "metrics": result.metrics if result else None, "file": files[i] if files else None}
               for i, (policy, result) in enumerate(zip(seeds, results))]
    if args.json:
        print(json.dumps({"workload": workload.name, "strategy": strategy.name, "score": strategy.score_label,
                          "layers": layers, "seeds": summary}, indent=2))
        return
    rows = [{"layer": row["layer"], "stage": row["stage"],
             strategy.score_label: "-" if row["score"] is None else f"{row['score']:.4g}",
             **{f"seed {i}": "/".join(map(str, bits)) for i, bits in enumerate(row["bits"])},
             "pruned to": (f"w{_choices(row['weight_choices'])} a{_choices(row['act_choices'])}"
                           if row["pruned"] else "-")} for row in layers]
    print(_format_table(rows, list(rows[0])))
    print(f"\n{len(seeds)} seed policies (W/A bits per layer above)")
    primary = workload.primary_metric
    for row in summary:
        metric = f", {primary} {row['metrics'][primary]:.4f}" if row["metrics"] else ""
        where = f" -> {row['file']}" if row["file"] else ""
        print(f"seed {row['seed']}: size {100 * row['size_ratio']:.2f} % of FP32{metric}{where}")


def _choices(bits: Sequence[int]) -> str:
    return ",".join(map(str, bits))


def cmd_train(args: argparse.Namespace) -> None:
    from .workloads.training import CONFIGS, train_workload

    if args.workload not in CONFIGS:
        known = "a built-in workload that reuses another's weights" if args.workload in workload_names() \
            else "not a built-in workload"
        raise CliError(f"cannot train {args.workload!r} ({known}); trainable workloads: {', '.join(sorted(CONFIGS))}")
    try:
        path = train_workload(args.workload, steps=args.steps, seed=args.seed, out=args.output)
    except ValueError as error:
        raise CliError(str(error)) from None
    print(f"wrote {path}")


def cmd_refine(args: argparse.Namespace) -> None:
    from .policy import WEIGHTS_SUFFIX, save_policy
    from .trials.refine import refine

    if args.steps < 1 or not args.lr > 0:
        raise CliError(f"--steps must be at least 1 and --lr positive, got {args.steps} and {args.lr}")
    workload = _workload(args.workload)
    evaluator = Evaluator(workload, latency="none")
    policy = _policy_for(args, evaluator.space)
    every, started = max(1, args.steps // 20), time.perf_counter()

    def progress(step: int, steps: int, loss: float) -> None:
        if step % every == 0 or step == steps:
            print(f"refine: step {step}/{steps}  loss {loss:.6g}  {time.perf_counter() - started:.0f} s",
                  file=sys.stderr, flush=True)

    result = refine(evaluator, policy, args.steps, args.lr, progress=progress)
    result.policy.provenance["workload"] = args.workload
    output = args.output or args.policy.with_name(args.policy.stem + ".refined.yaml")
    save_policy(result.policy, output)
    weights = output.with_name(output.stem + WEIGHTS_SUFFIX)
    if args.json:
        print(json.dumps({"before": result.before.to_dict(), "after": result.after.to_dict(),
                          "loss_before": result.loss_before, "loss_after": result.loss_after, "data": result.data,
                          "steps": args.steps, "lr": args.lr, "seconds": result.seconds,
                          "policy": str(output), "weights": str(weights)}, indent=2))
        return
    before, after = result.before, result.after
    rows = [{"metric": name, "fp32": f"{after.reference[name]:.4f}", "before": f"{before.metrics[name]:.4f}",
             "after": f"{value:.4f}", "drop before": f"{before.drops[name]:+.4f}",
             "drop after": f"{after.drops[name]:+.4f}"} for name, value in after.metrics.items()]
    rows.append({"metric": "loss", "fp32": "-", "before": f"{result.loss_before:.6g}",
                 "after": f"{result.loss_after:.6g}", "drop before": "-", "drop after": "-"})
    print(f"refined {args.policy} on {workload.name}: {args.steps} steps, lr {args.lr:g}, {result.data}, "
          f"{result.seconds:.1f} s")
    print(_format_table(rows, list(rows[0])))
    print(f"\nsize  {after.size_bytes} bytes ({100 * after.size_ratio:.2f} % of FP32), as before")
    print(f"wrote {output} and {weights}")


def cmd_launch(args: argparse.Namespace) -> None:
    from .experiments import launcher
    from .experiments.config import load_config

    config = launcher.apply_overrides(load_config(args.file), driver=args.driver, max_trials=args.max_trials,
                                      storage=args.storage, port=args.port, directory=args.directory)
    experiment_id = launcher.launch(config)
    print(next_steps(experiment_id, config.directory, args.directory))


def next_steps(experiment_id: str, directory: str, flag: str | None) -> str:
    """What to run once a search has ended: report, export and resume, with the ``--directory``
    the user gave (or the file's, when it is not the default)."""
    default = ExperimentConfig(workload="").directory
    where = f" --directory {shlex.quote(flag or directory)}" if (flag or directory) != default else ""
    return "\n".join([
        f"experiment {experiment_id} finished; next:",
        f"  mpqsearch report {experiment_id}{where} -o report.html              # fronts, bits, hypervolume",
        f"  mpqsearch export {experiment_id}{where} --pick knee -o policy.yaml  # the front's balanced policy",
        f"  mpqsearch resume {experiment_id}{where}                             # continue it if it was cut short",
    ])


def cmd_resume(args: argparse.Namespace) -> None:
    from .experiments import launcher

    launcher.resume(args.id, args.directory, args.port)


def cmd_view(args: argparse.Namespace) -> None:
    from .experiments import launcher

    launcher.view(args.id, args.directory, args.port)


def cmd_stop(args: argparse.Namespace) -> None:
    from .experiments import launcher

    launcher.stop(args.id, args.directory)
    print(f"asked experiment {args.id} to stop")


TARGET_HELP = ("how 8-bit weights are stored in the ONNX export: portable (exact on every x86 CPU) or vnni "
               "(faster on CPUs with VNNI, wrong on AVX2-only ones)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpqsearch", description="Mixed-precision quantization search.")
    sub = parser.add_subparsers(dest="command", required=True)

    layers = sub.add_parser("layers", help="list a model's quantizable layers")
    layers.add_argument("model", help="a built-in workload (e.g. sr-espcn-x2) or MODULE:FUNCTION "
                                      "returning a Workload or a model (e.g. mpqsearch.example:build)")
    layers.add_argument("--input-shape", help="example input shape for a model factory, e.g. 1,3,64,64")
    layers.add_argument("--json", action="store_true", help="print JSON instead of a table")
    layers.set_defaults(func=cmd_layers)

    evaluate = sub.add_parser("evaluate", help="evaluate one policy on a workload (one trial)")
    evaluate.add_argument("workload", help="a built-in workload or MODULE:FUNCTION returning a Workload")
    chosen = evaluate.add_mutually_exclusive_group()
    chosen.add_argument("--policy", type=Path, help="a policy file")
    chosen.add_argument("--uniform", metavar="W/A", help="the same weight/activation bits everywhere, e.g. 8/8")
    evaluate.add_argument("--latency", default="onnxruntime", choices=latency_backend_names())
    evaluate.add_argument("--threads", type=int, default=1, help="threads for the latency measurement")
    evaluate.add_argument("--target", choices=EXPORT_TARGETS, default="portable", help=TARGET_HELP)
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.set_defaults(func=cmd_evaluate)

    export = sub.add_parser("export-onnx", help="write the QDQ ONNX model of a policy")
    export.add_argument("workload")
    export.add_argument("--policy", type=Path, required=True)
    export.add_argument("-o", "--output", type=Path, required=True)
    export.add_argument("--target", choices=EXPORT_TARGETS, default="portable", help=TARGET_HELP)
    export.set_defaults(func=cmd_export_onnx)

    launch = sub.add_parser("launch", help="run a search described by an experiment file")
    launch.add_argument("file", type=Path, help="experiment YAML file (see examples/)")
    launch.add_argument("--driver", choices=["nni", "optuna"])
    launch.add_argument("--max-trials", type=int)
    launch.add_argument("--storage", help="Optuna storage URL or journal file")
    launch.add_argument("--port", type=int, help="NNI web UI port")
    launch.add_argument("--directory", help="where experiments keep their files")
    launch.set_defaults(func=cmd_launch)
    for name, func, text in (("resume", cmd_resume, "continue an interrupted experiment"),
                             ("view", cmd_view, "open the NNI web UI of a finished experiment"),
                             ("stop", cmd_stop, "stop a running experiment")):
        command = sub.add_parser(name, help=text)
        command.add_argument("id", help="experiment ID, as printed by launch")
        command.add_argument("--directory", help="where experiments keep their files")
        if name != "stop":
            command.add_argument("--port", type=int)
        command.set_defaults(func=func)

    seed = sub.add_parser("seed", help="run a seeding/pruning strategy: per-layer scores, seed policies, pruned choices")
    seed.add_argument("workload", help="a built-in workload or MODULE:FUNCTION returning a Workload")
    seed.add_argument("--strategy", required=True, help=f"one of: {', '.join(strategy_names())}")
    seed.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                      help="a strategy option (value read as YAML), repeatable, e.g. --arg threshold=2")
    seed.add_argument("-o", "--output", type=Path, help="directory to write the seed policies to")
    seed.add_argument("--evaluate", action="store_true", help="also measure each seed's metrics (no latency)")
    seed.add_argument("--json", action="store_true", help="print JSON instead of a table")
    seed.set_defaults(func=cmd_seed)

    train = sub.add_parser("train", help="retrain a built-in workload's model from scratch on the CPU")
    train.add_argument("workload")
    train.add_argument("--steps", type=int, help="training steps (default: the workload's own)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("-o", "--output", type=Path, help="weights file (default: the packaged one)")
    train.set_defaults(func=cmd_train)

    refine = sub.add_parser("refine", help="fine-tune a policy's quantized model (QAT) and write the refined policy")
    refine.add_argument("workload", help="a built-in workload or MODULE:FUNCTION returning a Workload")
    refine.add_argument("--policy", type=Path, required=True, help="the policy file to refine")
    refine.add_argument("--steps", type=int, required=True, help="optimizer steps")
    refine.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"peak learning rate (default {DEFAULT_LR:g})")
    refine.add_argument("-o", "--output", type=Path,
                        help="refined policy file (default: POLICY.refined.yaml; weights beside it)")
    refine.add_argument("--json", action="store_true", help="print JSON instead of a table")
    refine.set_defaults(func=cmd_refine)
    add_analysis_commands(sub)
    return parser


# --- analysis: report, export, apply (mpqsearch.analysis does the work) ---------------------
def _results(args: argparse.Namespace, source: str | None = None):
    from .analysis import load_results

    return load_results(source or args.source, directory=args.directory, study=args.study, config=args.config)


def cmd_report(args: argparse.Namespace) -> None:
    from .analysis.baselines import evaluate_uniform
    from .analysis.report import write_report

    results = _results(args)
    compare = {source: _results(args, source) for source in args.compare}
    baselines = evaluate_uniform(results, [parse_uniform(text) for text in args.uniform]) if args.uniform else []
    print(f"wrote {write_report(results, args.output, compare=compare, baselines=baselines)}")


def cmd_export(args: argparse.Namespace) -> None:
    from .analysis.export import picked_policy, write_onnx
    from .analysis.pick import PickError, pick
    from .policy import save_policy

    results = _results(args)
    try:
        row = pick(results, args.pick)
        policy = picked_policy(results, row, args.pick)
    except PickError as err:
        raise CliError(str(err)) from None
    metrics = ", ".join(f"{o.metric} {row.metrics[o.metric]:.4g}" for o in results.objectives if o.metric in row.metrics)
    print(f"trial {row.number} ({row.strategy}): {metrics}")
    print(f"wrote {save_policy(policy, args.output)}")
    if args.onnx:
        print(f"wrote {write_onnx(policy, _workload(results.config.workload), args.onnx, args.target)}")


def cmd_apply(args: argparse.Namespace) -> None:
    from .analysis.reapply import reapply

    try:
        policy = load_policy(args.policy)
    except PolicyError as err:
        raise CliError(str(err)) from None
    workload = args.workload or policy.provenance.get("workload")
    if not workload:
        raise CliError(f"{args.policy}: no workload in its provenance; pass --workload")
    checks = reapply(policy, _workload(workload), latency=args.latency)
    rows = [{"metric": c.name, "recorded": f"{c.recorded:.6g}",
             "measured": "-" if c.measured is None else f"{c.measured:.6g}",
             "difference": "-" if c.measured is None else f"{c.measured - c.recorded:+.3g}",
             "status": "ok" if c.ok else "DIFFERS"} for c in checks]
    if rows:
        print(_format_table(rows, list(rows[0])))
    differ = [c.name for c in checks if not c.ok]
    if differ:
        print(f"{len(differ)} of {len(checks)} recorded metrics differ beyond noise: {', '.join(differ)}")
        raise SystemExit(1)
    print(f"all {len(checks)} recorded metrics reproduce within noise")


def add_analysis_commands(sub: argparse._SubParsersAction) -> None:
    """The ``report``, ``export`` and ``apply`` subcommands."""
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
    apply.add_argument("--latency", choices=latency_backend_names(), help="default: the backend that measured it")
    apply.set_defaults(func=cmd_apply)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (CliError, ConfigError) as err:
        print(f"mpqsearch: error: {err}", file=sys.stderr)
        return 2
    except TrialError as err:
        print(f"mpqsearch: trial failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
