"""Commands on experiments: ``launch``, ``resume``, ``view``, ``stop``."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..experiments.config import DRIVERS, load_config
from ..experiments.runs import DEFAULT_DIRECTORY


def next_steps(experiment_id: str, directory: str) -> str:
    """What to run once a search has ended: report, export and resume, with ``--directory`` when
    the experiment is not in the default directory."""
    where = f" --directory {shlex.quote(directory)}" if directory != DEFAULT_DIRECTORY else ""
    return "\n".join([
        f"experiment {experiment_id} finished; next:",
        f"  mpqsearch report {experiment_id}{where} -o report.html              # fronts, bits, hypervolume",
        f"  mpqsearch export {experiment_id}{where} --pick knee -o policy.yaml  # the front's balanced policy",
        f"  mpqsearch resume {experiment_id}{where}                             # continue it if it was cut short",
    ])


def cmd_launch(args: argparse.Namespace) -> None:
    from ..experiments import launcher

    config = launcher.apply_overrides(load_config(args.file), driver=args.driver, max_trials=args.max_trials,
                                      storage=args.storage, port=args.port, directory=args.directory)
    experiment_id = launcher.launch(config)
    print(next_steps(experiment_id, config.directory))


def cmd_resume(args: argparse.Namespace) -> None:
    from ..experiments import launcher

    launcher.resume(args.id, args.directory, args.port, storage=args.storage)


def cmd_worker(args: argparse.Namespace) -> None:
    from ..experiments.drivers.optuna import join

    ran = join(args.storage, args.study, args.cache_dir)
    print(f"worker finished: {ran} trial(s) run here")


def cmd_view(args: argparse.Namespace) -> None:
    from ..experiments import launcher

    launcher.view(args.id, args.directory, args.port)


def cmd_stop(args: argparse.Namespace) -> None:
    from ..experiments import launcher

    launcher.stop(args.id, args.directory)
    print(f"asked experiment {args.id} to stop")


def add_commands(sub: argparse._SubParsersAction) -> None:
    launch = sub.add_parser("launch", help="run a search described by an experiment file")
    launch.add_argument("file", type=Path, help="experiment YAML file (see examples/)")
    launch.add_argument("--driver", choices=DRIVERS)
    launch.add_argument("--max-trials", type=int)
    launch.add_argument("--storage", help="Optuna storage URL or journal file")
    launch.add_argument("--port", type=int, help="NNI web UI port")
    launch.add_argument("--directory", help="where experiments keep their files")
    launch.set_defaults(func=cmd_launch)
    worker = sub.add_parser("worker", help="add a worker to a running Optuna experiment, from any machine that "
                                           "reaches its storage")
    worker.add_argument("storage", help="the experiment's storage URL (e.g. postgresql+psycopg://user@host/db)")
    worker.add_argument("--study", help="the experiment ID (optional if the storage holds one study)")
    worker.add_argument("--cache-dir", help="where this worker keeps the trials' shared cache "
                                            "(default ~/.cache/mpqsearch/trials)")
    worker.set_defaults(func=cmd_worker)
    for name, func, text in (("resume", cmd_resume, "continue an interrupted experiment"),
                             ("view", cmd_view, "open the NNI web UI of a finished experiment"),
                             ("stop", cmd_stop, "stop a running experiment")):
        command = sub.add_parser(name, help=text)
        command.add_argument("id", help="experiment ID, as printed by launch")
        command.add_argument("--directory", help="where experiments keep their files")
        if name != "stop":
            command.add_argument("--port", type=int)
        if name == "resume":
            command.add_argument("--storage", help="the Optuna storage URL again, where the launch's held a password "
                                                   "(passwords are never saved)")
        command.set_defaults(func=func)
