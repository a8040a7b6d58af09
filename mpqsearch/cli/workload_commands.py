"""Commands on one workload: ``layers``, ``evaluate``, ``export-onnx``, ``seed``, ``train``, ``refine``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..quant.spec import EXPORT_TARGETS, FLOAT_BITS, check_bits
from .output import CliError, print_json, print_table

TARGET_HELP = ("the CPUs to quantize and export for: portable (8-bit weights within +-64: exact and fast on every "
               "x86 CPU) or vnni (full range: exact on CPUs with VNNI, wrong on AVX2-only ones); default: the "
               "policy's, else this CPU's (or MPQSEARCH_TARGET)")
LATENCY_HELP = "latency backend: onnxruntime (default), lut, torch or none"
WORKLOAD_HELP = ("a built-in workload (e.g. sr-espcn-x2), MODULE:FUNCTION returning a Workload, or a YAML file "
                 "naming a model factory and an image folder")


def load_workload(spec: str) -> Any:
    """The workload ``spec`` names; a one-line :class:`CliError` if it cannot be loaded."""
    from ..workloads import get_workload

    try:
        return get_workload(spec)
    except ValueError as err:
        raise CliError(str(err)) from None


def load_model(spec: str, input_shape: str | None) -> tuple[Any, Any]:
    """The model and example input named by a built-in workload, a ``module:function`` returning
    a Workload, or a ``module:factory`` returning a module (then ``--input-shape`` is needed)."""
    import torch
    from torch import nn

    from ..specs import load_callable
    from ..workloads import Workload

    if ":" not in spec:
        workload = load_workload(spec)
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


def evaluator_for(workload: Any, latency: str = "none", threads: int = 1, target: str | None = None) -> Any:
    """An :class:`~mpqsearch.trials.Evaluator` of ``workload``; a latency option the backend does
    not take, or an unknown backend, is a one-line error."""
    from ..trials.evaluate import Evaluator
    from ..trials.latency import backend_options

    try:
        return Evaluator(workload, latency=latency, latency_options=backend_options(latency, threads, target))
    except ValueError as err:
        raise CliError(str(err)) from None


def policy_for(args: argparse.Namespace, space: Any) -> Any:
    """``--policy FILE`` checked against the model, or ``--uniform W/A`` (default: FP32)."""
    from ..policy import Policy, PolicyError, load_policy

    if args.policy:
        try:
            return load_policy(args.policy, space)
        except PolicyError as err:
            raise CliError(str(err)) from None
    weight, act = parse_uniform(args.uniform) if args.uniform else (FLOAT_BITS, FLOAT_BITS)
    return Policy.uniform(space, weight, act)


def cmd_layers(args: argparse.Namespace) -> None:
    from ..search_spaces import SearchSpace

    model, example = load_model(args.model, args.input_shape)
    space = SearchSpace.from_model(model, example)
    if args.json:
        print_json([layer.to_dict() for layer in space.layers])
        return
    rows = [{
        "layer": layer.name, "kind": layer.kind + ("/dw" if layer.depthwise else ""),
        "in": layer.in_channels, "out": layer.out_channels, "kernel": "x".join(map(str, layer.kernel_size)) or "-",
        "params": layer.params, "MACs": layer.macs, "stage": layer.stage, "tied": layer.tied_group or "-",
        "act": {True: "unsigned", False: "signed", None: "from data"}[layer.act_unsigned],
    } for layer in space.layers]
    print_table(rows)
    total_macs = sum(layer.macs for layer in space.layers)
    print(f"\n{len(rows)} quantizable layers, {sum(r['params'] for r in rows)} parameters in them, "
          f"{space.other_params} elsewhere, {total_macs} MACs for input {list(example.shape)}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    workload = load_workload(args.workload)
    evaluator = evaluator_for(workload, args.latency, args.threads, args.target)
    policy = policy_for(args, evaluator.space)
    result = evaluator.evaluate(replace(policy, target=args.target) if args.target else policy)
    if args.json:
        print_json({**result.to_dict(), "directions": workload.directions, "baselines": workload.baselines})
        return
    print_table([{"metric": name, "value": f"{value:.4f}", "fp32": f"{result.reference[name]:.4f}",
                  "drop": f"{result.drops[name]:+.4f}", "direction": workload.directions.get(name, "-"),
                  "baseline": f"{workload.baselines[name]:.4f}" if name in workload.baselines else "-"}
                 for name, value in result.metrics.items()])
    print(f"\nsize     {result.size_bytes} bytes ({100 * result.size_ratio:.2f} % of FP32)")
    print(f"BOPs     {result.bops:.4g} ({100 * result.bops_ratio:.2f} % of FP32)")
    if result.latency is not None:
        lat = result.latency
        print(f"latency  {lat.median_ms:.3f} ms median ({lat.backend}, {lat.method}, {lat.threads} thread(s), "
              f"{lat.runs} runs, IQR {lat.iqr_ms:.3f} ms)")
    print("timings  " + ", ".join(f"{step} {seconds:.3f} s" for step, seconds in result.timings.items()))


def cmd_export_onnx(args: argparse.Namespace) -> None:
    from ..apply import apply_policy
    from ..policy import PolicyError, load_policy
    from ..quant.export import export_onnx

    workload = load_workload(args.workload)
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
    from ..policy import save_policy
    from ..search_spaces.costs import size_ratio
    from ..strategies import StrategyContext, get_strategy
    from ..workloads import spec_record

    workload = load_workload(args.workload)
    try:
        strategy = get_strategy(args.strategy, **parse_strategy_args(args.arg))
    except ValueError as err:
        raise CliError(str(err)) from None
    evaluator = evaluator_for(workload)
    space = evaluator.space
    context = StrategyContext(space, evaluator)
    scores, seeds, pruned = strategy.scores(context), strategy.seed(context), strategy.prune(context)
    results = [evaluator.evaluate(policy, measure_latency=False) if args.evaluate else None for policy in seeds]
    files = []
    for i, (policy, result) in enumerate(zip(seeds, results, strict=True)):
        policy.provenance.update({"strategy": strategy.name, "workload": spec_record(args.workload)})
        if result is not None:
            policy.metrics.update(result.flat_metrics())
        if args.output:
            files.append(str(save_policy(policy, args.output / f"{strategy.name}-{i}.yaml")))
    layers = [{
        "layer": n, "stage": space.layer(n).stage, "score": scores.get(n),
        "bits": [[policy.layers[n].weight_bits, policy.layers[n].act_bits] for policy in seeds],
        "weight_choices": list(pruned.weight_choices[n]), "act_choices": list(pruned.act_choices[n]),
        "pruned": (pruned.weight_choices[n], pruned.act_choices[n]) != (space.weight_choices[n], space.act_choices[n]),
    } for n in space.names]
    summary = [{"seed": i, "size_ratio": size_ratio(space, policy), "metrics": result.metrics if result else None,
                "file": files[i] if files else None}
               for i, (policy, result) in enumerate(zip(seeds, results, strict=True))]
    if args.json:
        print_json({"workload": workload.name, "strategy": strategy.name, "score": strategy.score_label,
                    "layers": layers, "seeds": summary})
        return
    print_table([{"layer": row["layer"], "stage": row["stage"],
                  strategy.score_label: "-" if row["score"] is None else f"{row['score']:.4g}",
                  **{f"seed {i}": "/".join(map(str, bits)) for i, bits in enumerate(row["bits"])},
                  "pruned to": (f"w{_choices(row['weight_choices'])} a{_choices(row['act_choices'])}"
                                if row["pruned"] else "-")} for row in layers])
    print(f"\n{len(seeds)} seed policies (W/A bits per layer above)")
    primary = workload.primary_metric
    for row in summary:
        metric = f", {primary} {row['metrics'][primary]:.4f}" if row["metrics"] else ""
        where = f" -> {row['file']}" if row["file"] else ""
        print(f"seed {row['seed']}: size {100 * row['size_ratio']:.2f} % of FP32{metric}{where}")


def _choices(bits: Sequence[int]) -> str:
    return ",".join(map(str, bits))


def cmd_train(args: argparse.Namespace) -> None:
    from ..workloads import workload_names
    from ..workloads.training import CONFIGS, train_workload

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
    from ..policy import WEIGHTS_SUFFIX, save_policy
    from ..trials.refine import DEFAULT_LR, refine
    from ..workloads import spec_record

    lr = DEFAULT_LR if args.lr is None else args.lr
    if args.steps < 1 or not lr > 0:
        raise CliError(f"--steps must be at least 1 and --lr positive, got {args.steps} and {lr}")
    workload = load_workload(args.workload)
    evaluator = evaluator_for(workload)
    policy = policy_for(args, evaluator.space)
    every, started = max(1, args.steps // 20), time.perf_counter()

    def progress(step: int, steps: int, loss: float) -> None:
        if step % every == 0 or step == steps:
            print(f"refine: step {step}/{steps}  loss {loss:.6g}  {time.perf_counter() - started:.0f} s",
                  file=sys.stderr, flush=True)

    result = refine(evaluator, policy, args.steps, lr, progress=progress)
    result.policy.provenance["workload"] = spec_record(args.workload)
    output = args.output or args.policy.with_name(args.policy.stem + ".refined.yaml")
    save_policy(result.policy, output)
    weights = output.with_name(output.stem + WEIGHTS_SUFFIX)
    if args.json:
        print_json({"before": result.before.to_dict(), "after": result.after.to_dict(),
                    "loss_before": result.loss_before, "loss_after": result.loss_after, "data": result.data,
                    "steps": args.steps, "lr": lr, "seconds": result.seconds,
                    "policy": str(output), "weights": str(weights)})
        return
    before, after = result.before, result.after
    rows = [{"metric": name, "fp32": f"{after.reference[name]:.4f}", "before": f"{before.metrics[name]:.4f}",
             "after": f"{value:.4f}", "drop before": f"{before.drops[name]:+.4f}",
             "drop after": f"{after.drops[name]:+.4f}"} for name, value in after.metrics.items()]
    rows.append({"metric": "loss", "fp32": "-", "before": f"{result.loss_before:.6g}",
                 "after": f"{result.loss_after:.6g}", "drop before": "-", "drop after": "-"})
    print(f"refined {args.policy} on {workload.name}: {args.steps} steps, lr {lr:g}, {result.data}, "
          f"{result.seconds:.1f} s")
    print_table(rows)
    print(f"\nsize  {after.size_bytes} bytes ({100 * after.size_ratio:.2f} % of FP32), as before")
    print(f"wrote {output} and {weights}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    layers = sub.add_parser("layers", help="list a model's quantizable layers")
    layers.add_argument("model", help="a built-in workload (e.g. sr-espcn-x2) or MODULE:FUNCTION "
                                      "returning a Workload or a model (e.g. mpqsearch.example:build)")
    layers.add_argument("--input-shape", help="example input shape for a model factory, e.g. 1,3,64,64")
    layers.add_argument("--json", action="store_true", help="print JSON instead of a table")
    layers.set_defaults(func=cmd_layers)

    evaluate = sub.add_parser("evaluate", help="evaluate one policy on a workload (one trial)")
    evaluate.add_argument("workload", help=WORKLOAD_HELP)
    chosen = evaluate.add_mutually_exclusive_group()
    chosen.add_argument("--policy", type=Path, help="a policy file")
    chosen.add_argument("--uniform", metavar="W/A", help="the same weight/activation bits everywhere, e.g. 8/8")
    evaluate.add_argument("--latency", default="onnxruntime", help=LATENCY_HELP)
    evaluate.add_argument("--threads", type=int, default=1, help="threads for the latency measurement")
    evaluate.add_argument("--target", choices=EXPORT_TARGETS, help=TARGET_HELP)
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.set_defaults(func=cmd_evaluate)

    export = sub.add_parser("export-onnx", help="write the QDQ ONNX model of a policy")
    export.add_argument("workload", help=WORKLOAD_HELP)
    export.add_argument("--policy", type=Path, required=True)
    export.add_argument("-o", "--output", type=Path, required=True)
    export.add_argument("--target", choices=EXPORT_TARGETS, help=TARGET_HELP)
    export.set_defaults(func=cmd_export_onnx)

    seed = sub.add_parser("seed", help="run a seeding/pruning strategy: per-layer scores, seed policies, "
                                       "pruned choices")
    seed.add_argument("workload", help=WORKLOAD_HELP)
    seed.add_argument("--strategy", required=True,
                      help="channel_ratio, gamma, importance, sensitivity, uniform, or one registered by your code")
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
    refine.add_argument("workload", help=WORKLOAD_HELP)
    refine.add_argument("--policy", type=Path, required=True, help="the policy file to refine")
    refine.add_argument("--steps", type=int, required=True, help="optimizer steps")
    refine.add_argument("--lr", type=float, help="peak learning rate (default: mpqsearch.trials.refine.DEFAULT_LR)")
    refine.add_argument("-o", "--output", type=Path,
                        help="refined policy file (default: POLICY.refined.yaml; weights beside it)")
    refine.add_argument("--json", action="store_true", help="print JSON instead of a table")
    refine.set_defaults(func=cmd_refine)
