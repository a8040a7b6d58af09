"""The ``mpqsearch`` command: parse, call, print.

One module per command group: :mod:`.workload_commands` (layers, evaluate, export-onnx, seed,
train, refine), :mod:`.experiment_commands` (launch, resume, view, stop) and
:mod:`.analysis_commands` (report, export, apply); :mod:`.output` prints. The work is done by the
rest of the package; the modules here import it when a command runs, so that ``mpqsearch --help``
answers without importing torch or ONNX.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..experiments.config import ConfigError
from ..experiments.runs import RunError
from ..trials.errors import TrialError
from . import analysis_commands, experiment_commands, workload_commands
from .output import CliError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpqsearch", description="Mixed-precision quantization search.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (workload_commands, experiment_commands, analysis_commands):
        group.add_commands(sub)
    return parser


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
    except RunError as err:
        print(f"mpqsearch: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a directory that cannot be written, a full disk
        where = f"{err.filename}: " if err.filename else ""
        print(f"mpqsearch: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    return 0
