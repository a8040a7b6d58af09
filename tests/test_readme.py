"""Every command in the README's shell blocks, as shipped.

Each one is parsed by the real command-line parser (a renamed flag or command fails here). The
ones a new user runs first are then run, in order, through the installed ``mpqsearch`` command in
a fresh home directory: the first-run search, the walkthrough from search to deployed policy
(launch, report, export, apply), the layer table, evaluation, the strategies, QAT refinement and
the ONNX export. Left to other tests, with their reason: the 60- and 100-trial SR launches
(tests/test_examples.py runs every example with both drivers at a small budget), ``resume``,
``stop`` and ``worker`` (tests/experiments/test_optuna_faults.py), and ``view`` (it serves until
interrupted).
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mpqsearch.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT.joinpath("README.md").read_text()
RUN = [  # (pattern of a README command, run it?) in the order a user meets them
    ("mpqsearch launch examples/example.yaml", True),
    ("mpqsearch launch examples/sr-espcn-x2.yaml", False),
    ("mpqsearch resume ID", False), ("mpqsearch view ID", False), ("mpqsearch stop ID", False),
    ("mpqsearch worker ", False),
    ("mpqsearch seed ", True), ("mpqsearch refine ", True), ("mpqsearch apply policy.refined.yaml", True),
    ("mpqsearch evaluate ", True), ("mpqsearch export-onnx ", True), ("mpqsearch layers ", True),
    ("mpqsearch report ID", True), ("mpqsearch export ID", True), ("mpqsearch apply policy.yaml", True),
]


def readme_commands() -> list[str]:
    """The mpqsearch commands of the README's ``bash`` blocks (comments stripped; the part after
    the last ``&&`` of a set-up line)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            command = line.split("&&")[-1].split(" # ")[0].strip()
            if command.startswith("mpqsearch "):
                commands.append(command)
    return commands


COMMANDS = readme_commands()


def _run(command: str) -> bool:
    return next(run for pattern, run in RUN if command.startswith(pattern))


def test_every_readme_command_is_known_to_this_test_and_parses():
    assert len(COMMANDS) >= 20
    parser = build_parser()
    for command in COMMANDS:
        _run(command)  # a command no pattern covers fails here: add it to RUN
        parser.parse_args(shlex.split(command.replace("ID", "abcd1234"))[1:])  # exits on an unknown flag


@pytest.mark.slow
def test_the_readme_commands_run_as_written(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples")
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    mpqsearch = Path(sys.executable).parent / "mpqsearch"
    experiment = None
    for command in COMMANDS:
        if not _run(command):
            continue
        if "ID" in command:
            command = command.replace("ID", experiment)
        elif command.startswith("mpqsearch refine") or "sr-espcn-x2 --policy policy.yaml" in command:
            sr = work / "sr"  # the README's SR commands read an sr-espcn-x2 policy: a seed it wrote
            sr.mkdir(exist_ok=True)
            shutil.copy(work / "seeds" / "sensitivity-0.yaml", sr / "policy.yaml")
        cwd = work / "sr" if (work / "sr").exists() and ("policy" in command and "sr-espcn" in command
                                                         or command.startswith("mpqsearch apply policy.refined")) \
            else work
        result = subprocess.run([str(mpqsearch), *shlex.split(command)[1:]], cwd=cwd, env=env, capture_output=True,
                                text=True, timeout=1200)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        found = re.search(r"experiment (\w+) finished", result.stdout)
        experiment = found.group(1) if found else experiment
    assert (work / "report.html").exists() and (work / "model.onnx").exists()
    assert (work / "sr" / "policy.refined.weights.pt").exists() and (work / "sr" / "model.onnx").exists()
    assert len(list((home / "mpqsearch-experiments").iterdir())) == 2
