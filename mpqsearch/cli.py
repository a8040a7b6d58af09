"""The ``mpqsearch`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch
from torch import nn

from .search_spaces import SearchSpace
from .specs import load_callable


class CliError(Exception):
    """A user mistake on the command line; printed as one line, exit status 2."""


def load_model(spec: str) -> nn.Module:
    """Build the model named ``module:factory`` (a function or class called with no arguments)."""
    try:
        model = load_callable(spec, "model")()
    except ValueError as err:
        raise CliError(str(err)) from None
    if not isinstance(model, nn.Module):
        raise CliError(f"model {spec!r}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise CliError(f"--input-shape {text!r}: expected positive integers separated by commas, e.g. 1,3,64,64")
    return shape


def _format_table(rows: list[dict[str, object]], columns: Sequence[str]) -> str:
    cells = [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) if v.replace(".", "").isdigit() else v.ljust(w) for v, w in zip(r, widths))
              for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def cmd_layers(args: argparse.Namespace) -> None:
    model = load_model(args.model)
    shape = parse_shape(args.input_shape)
    space = SearchSpace.from_model(model, torch.randn(shape))
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
          f"{space.other_params} elsewhere, {total_macs} MACs for input {list(shape)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpqsearch", description="Mixed-precision quantization search.")
    sub = parser.add_subparsers(dest="command", required=True)
    layers = sub.add_parser("layers", help="list a model's quantizable layers")
    layers.add_argument("model", help="MODULE:FACTORY, e.g. mpqsearch.example:build")
    layers.add_argument("--input-shape", required=True, help="example input shape, e.g. 1,3,64,64")
    layers.add_argument("--json", action="store_true", help="print JSON instead of a table")
    layers.set_defaults(func=cmd_layers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CliError as err:
        print(f"mpqsearch: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
