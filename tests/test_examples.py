"""Every experiment file in ``examples/`` walked as a user would: launched with each driver at a
tiny budget, then ``report``, ``export --pick knee`` and ``apply`` on the result, all through the
``mpqsearch`` command. The files are used as shipped (their constraints, strategies and latency
backends); only the budget, the results directory and the NNI port are overridden by flags."""

import re
from pathlib import Path

import pytest
import yaml

from mpqsearch.cli import main

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))
NNI_PORT = 18661


def test_the_examples_are_the_ones_this_file_walks():
    assert {p.stem for p in EXAMPLES} >= {"example", "cls-digits", "sr-espcn-x2", "sr-srresnet-x2", "sr-rrdb-x2"}
    assert all(yaml.safe_load(p.read_text()).get("constraints") for p in EXAMPLES if p.stem != "example")


@pytest.mark.slow
@pytest.mark.parametrize("driver", ["optuna", "nni"])
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_an_example_launches_then_reports_exports_and_applies(example, driver, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["launch", str(example), "--driver", driver, "--max-trials", "2", "--directory", str(runs),
                 "--port", str(NNI_PORT)]) == 0
    out = capsys.readouterr().out
    experiment_id = re.search(r"experiment (\w+) finished", out).group(1)
    where = f"--directory {runs}"
    assert f"mpqsearch report {experiment_id} {where}" in out
    assert f"mpqsearch export {experiment_id} {where} --pick knee" in out
    final = re.findall(r"trials (\d+)/2: (\d+) done, 0 failed, 0 running; (feasible front \d|best \w+ [\d.]+)", out)
    assert final and final[-1][0] == final[-1][1] and int(final[-1][0]) >= 2, out  # 2 workers may run one more
    if driver == "nni":
        assert f"web UI: http://127.0.0.1:{NNI_PORT}\n" in out

    report = tmp_path / "report.html"
    assert main(["report", experiment_id, "--directory", str(runs), "-o", str(report)]) == 0
    assert report.stat().st_size > 100_000 and "Pareto front" in report.read_text()
    policy = tmp_path / "policy.yaml"
    assert main(["export", experiment_id, "--directory", str(runs), "--pick", "knee", "-o", str(policy)]) == 0
    capsys.readouterr()
    assert main(["apply", str(policy)]) == 0
    assert "recorded metrics reproduce within noise" in capsys.readouterr().out
