"""benchmarks/search_efficiency.py runs, tiny: a few policies enumerated, the quick sweep on the
stored table, and its scoring against a hand-made front."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "search_efficiency.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("search_efficiency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scores_measure_the_front_against_its_nadir(bench):
    values = {(8, 8): (1.0, 4.0), (8, 4): (0.9, 3.0), (4, 8): (0.8, 2.0), (4, 4): (0.5, 2.5)}
    rows = [{"params": list(k), "metrics": {}, "values": list(v)} for k, v in values.items()]
    table = bench.Table({"names": ["x", "y"], "choices": {"x": [4, 8], "y": [4, 8]},
                         "objectives": [["top1", "maximize"], ["size_ratio", "minimize"]], "rows": rows})
    assert table.front == {(8, 8), (8, 4), (4, 8)}
    assert table.hv_true == pytest.approx(0.1 * 1.0)  # only (8, 4) lies inside the nadir (0.8, 4.0)
    score = table.score([(4, 4), (8, 8), (8, 8), (8, 4)])
    assert score["hv"] == pytest.approx(1.0) and score["front"] == 2
    assert score["distinct_per_trial"] == 0.75 and score["t95"] == 3


def test_enumerate_and_the_quick_sweep_run(bench, tmp_path, capsys):
    assert bench.main(["enumerate", "--spaces", "cls", "--limit", "3", "--out-dir", str(tmp_path)]) == 0
    table = json.loads((tmp_path / "cls.json").read_text())
    assert len(table["rows"]) == 3 and table["names"][0] == "stem.0/w"
    assert bench.main(["sweep", "--quick", "--out", str(tmp_path / "sweep.json")]) == 0
    printed = capsys.readouterr().out
    assert "| cls | SensitivityModel | 3% (31) |" in printed
    results = json.loads((tmp_path / "sweep.json").read_text())
    assert all(s["distinct_per_trial"] == 1.0 for r in results for s in r["scores"])
