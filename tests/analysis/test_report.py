"""The report is one self-contained page; headless Chromium renders every figure without errors."""

import re
import shutil
import subprocess

import pytest

from mpqsearch.analysis import load_results
from mpqsearch.analysis.report import report_figures
from mpqsearch.cli import main

FIGURES = ["front-2d", "front-3d", "bits", "hypervolume"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Software WebGL (the 3D front) logs performance notices; anything else on the console fails.
GPU_NOTICES = re.compile(r"WebGL|GL Driver Message|Canvas2D: Multiple readback")


@pytest.fixture(scope="module")
def report(optuna_run, tmp_path_factory):
    runs, experiment_id = optuna_run
    path = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", experiment_id, "--directory", str(runs), "-o", str(path)]) == 0
    return path


def test_report_is_self_contained_with_every_figure_and_the_front_table(report):
    page = report.read_text()
    assert not re.search(r"<(script|link)[^>]+(src|href)=", page)  # nothing loaded from elsewhere
    assert page.count("<script") >= 1 + len(FIGURES) and len(page) > 3_000_000  # plotly.js is inlined
    for name in FIGURES:
        assert f'id="{name}"' in page
    front = re.search(r"<h2>Pareto front \((\d+) of 6 completed trials\)</h2>(.*)</table>", page)
    assert front and front.group(2).count("<tr>") == int(front.group(1)) + 1  # header and one row per trial


def test_hypervolume_chart_compares_experiments_and_scores_figure_takes_supplied_scores(optuna_run, nni_run):
    results = load_results(optuna_run[1], directory=optuna_run[0])
    other = load_results(nni_run[1], directory=nni_run[0])
    scores = {"sensitivity": {"stem": 0.3, "head": 0.1}, "channel ratio": {"stem": 1.0, "up": 2.0}}
    found = report_figures(results, compare={"nni": other}, strategy_scores=scores)
    assert [trace.name for trace in found["hypervolume"].data] == [results.experiment, "nni"]
    layers = [layer.name for layer in results.space.layers]
    bars = found["strategy-scores"].data
    assert list(bars[0].x) == layers and bars[0].y[layers.index("head")] == 0.1 and bars[1].y[0] == 1.0


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium_without_console_errors(report, tmp_path):
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
               "--virtual-time-budget=10000", "--dump-dom", report.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line and not GPU_NOTICES.search(line)]
    assert console == []
    dom = done.stdout
    for name in FIGURES:
        start = dom.index(f'id="{name}"')
        rendered = dom[start:dom.find('class="figure"', start)]
        assert "js-plotly-plot" in dom[dom.rfind("<div", 0, start):start + 200], name
        assert 'class="main-svg"' in rendered, f"{name} was not drawn"
    assert "gl-container" in dom[dom.index('id="front-3d"'):]  # the 3D scene got its WebGL canvas


def test_an_experiment_without_completed_trials_still_gets_a_page():
    from mpqsearch.analysis.report import render_report
    from mpqsearch.analysis.table import Results, TrialRow
    from mpqsearch.objectives import Objective

    failed = TrialRow(0, "0", "failed", {"stem/w": 4}, fail_reason="MetricError: nan")
    results = Results("x", "nni", "example", [failed], [Objective("top1", "maximize"),
                                                         Objective("size_ratio", "minimize")], {})
    page = render_report(results)
    assert "1 trials (1 failed)" in page and "Pareto front (0 of 0 completed trials)" in page


def test_uniform_baselines_no_trial_ran_are_evaluated_on_request(optuna_run):
    from mpqsearch.analysis.baselines import evaluate_uniform
    from mpqsearch.analysis.figures import front_2d, uniform_bits

    results = load_results(optuna_run[1], directory=optuna_run[0])
    extra = evaluate_uniform(results, [(8, 8), (2, 4)])  # W8A8 was seeded: only W2A4 is evaluated
    assert [(uniform_bits(r.policy), r.strategy) for r in extra] == [((2, 4), "uniform (evaluated)")]
    assert extra[0].metrics["size_ratio"] < min(results.column("size_ratio", results.complete()))
    marked = [t for t in front_2d(results, baselines=extra).data if t.name == "uniform precision"][0]
    assert sorted(marked.text) == ["W2A4", "W4A8", "W8A8"]
