"""Every malformed input a user was seen to give: one line naming their file (or flag) and the key,
no traceback, nothing created on disk."""

import re
import subprocess

import pytest
import yaml

from mpqsearch.cli import main

EXPERIMENT = {
    "workload": "example",
    "search_space": {"weight_bits": [4, 8], "act_bits": [8]},
    "objectives": [{"metric": "top1", "direction": "maximize"}, {"metric": "size_ratio", "direction": "minimize"}],
    "sampler": {"name": "Random", "args": {"seed": 0}},
    "budget": {"max_trials": 2},
    "latency": {"backend": "none"},
}


def _write(tmp_path, text_or_data, name="experiment.yaml"):
    path = tmp_path / name
    path.write_text(text_or_data if isinstance(text_or_data, str) else yaml.safe_dump(text_or_data))
    return path


def _one_line_error(capsys, argv, pattern, status=2):
    assert main(argv) == status
    captured = capsys.readouterr()
    error = captured.err
    assert error.startswith("mpqsearch: error: ") and error.count("\n") == 1, error
    assert "Traceback" not in error + captured.out
    assert re.search(pattern, error), error
    return error


FILE_MISTAKES = [
    ({"sampler": {"name": "NSGAII", "args": {"population_size": 1}}}, r"experiment.yaml: sampler.args: NSGAII: "),
    ({"sampler": {"name": "Random", "args": {"seed": "abc"}}}, r"experiment.yaml: sampler.args.seed: must be an "
                                                                r"integer, got 'abc'"),
    ({"search_space": {"weight_bits": [4, 8], "exclude": ["*"]}}, r"experiment.yaml: search_space: nothing to search"),
    ({"strategies": {"seed": [{"name": "uniform", "args": {"bits": [[99, 8]]}}]}},
     r"experiment.yaml: strategies.seed\[0\]: .*bits\[0\]: bits must be 2..16 or 32, got 99"),
    ({"budget": {"max_trials": 10**30}}, r"experiment.yaml: budget.max_trials: must be at most 1000000"),
    ({"storage": "foo://somewhere"}, r"storage: foo://somewhere: not a database URL"),
    ({"storage": "mysql://user:secret@127.0.0.1/runs"}, r"storage: mysql://user:\*\*\*@127.0.0.1/runs: its database "
                                                        r"driver is not installed"),
    ({"storage": "postgresql+psycopg://user:secret@127.0.0.1:1/runs"},
     r"storage: postgresql\+psycopg://user:\*\*\*@127.0.0.1:1/runs: cannot open the database: .*refused"),
    ({"storage": "sqlite:////nonexistent/dir/runs.db"}, r"storage: sqlite:////nonexistent/dir/runs.db: cannot open"),
]


@pytest.mark.parametrize("changes,pattern", FILE_MISTAKES)
def test_a_mistake_in_the_experiment_file_is_one_line_and_creates_nothing(tmp_path, capsys, changes, pattern):
    path = _write(tmp_path, {**EXPERIMENT, **changes, "directory": str(tmp_path / "runs")})
    error = _one_line_error(capsys, ["launch", str(path)], pattern)
    assert "secret" not in error
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_key_written_twice_is_refused(tmp_path, capsys):
    text = yaml.safe_dump(EXPERIMENT) + "budget: {max_trials: 5}\n"
    _one_line_error(capsys, ["launch", str(_write(tmp_path, text))],
                    r"experiment.yaml: not valid YAML at line \d+: key 'budget' appears twice")


@pytest.mark.parametrize("flags,pattern", [
    (["--max-trials", "-3"], r"^mpqsearch: error: --max-trials: must be a positive integer, got -3$"),
    (["--port", "70000"], r"^mpqsearch: error: --port: must be at most 65535, got 70000$"),
    (["--directory", "FILE"], r"^mpqsearch: error: --directory: .*not-a-directory is a file, not a directory$"),
])
def test_flags_are_checked_as_flags(tmp_path, capsys, flags, pattern):
    (tmp_path / "not-a-directory").write_text("")
    flags = [str(tmp_path / "not-a-directory") if f == "FILE" else f for f in flags]
    _one_line_error(capsys, ["launch", str(_write(tmp_path, EXPERIMENT)), *flags], pattern)


def test_report_of_a_missing_storage_file_says_so(tmp_path, capsys):
    _one_line_error(capsys, ["report", f"sqlite:///{tmp_path / 'missing.db'}"], r"no such SQLite file")
    assert not (tmp_path / "missing.db").exists()


def test_apply_of_a_policy_made_for_another_model_names_the_file(tmp_path, capsys):
    from mpqsearch.policy import Policy, save_policy
    from mpqsearch.quant.graph import layer_fingerprint
    from mpqsearch.workloads import get_workload

    digits = get_workload("cls-digits").build_model()
    policy = Policy.uniform(layer_fingerprint(digits), 8, 8)
    policy.provenance["workload"] = "example"
    path = save_policy(policy, tmp_path / "digits-policy.yaml")
    _one_line_error(capsys, ["apply", str(path)], rf"{re.escape(str(path))}: layers\.\S+: policy of another model")


def test_a_storage_that_stops_taking_writes_ends_the_run_in_one_line(tmp_path, capsys, monkeypatch):
    """A disk filling up mid-run: the storage's writes fail; the run ends, finished trials kept."""
    import optuna
    import sqlalchemy

    path = _write(tmp_path, {**EXPERIMENT, "budget": {"max_trials": 6}, "directory": str(tmp_path / "runs")})
    original = optuna.storages.RDBStorage.set_trial_state_values
    told = []

    def fill_the_disk(self, trial_id, state, values=None):
        if state.is_finished() and len(told) >= 3:
            raise sqlalchemy.exc.OperationalError("UPDATE trials", {}, Exception("database or disk is full"))
        told.append(trial_id)
        return original(self, trial_id, state, values)

    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_state_values", fill_the_disk)
    _one_line_error(capsys, ["launch", str(path)], r"the storage stopped taking results \(database or disk is "
                                                  r"full\); the finished trials are kept: .* mpqsearch resume",
                    status=1)
    monkeypatch.undo()
    run = next((tmp_path / "runs").iterdir())
    study = optuna.load_study(study_name=run.name, storage=f"sqlite:///{run / 'optuna.db'}")
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3


def test_a_read_only_directory_is_one_line(tmp_path, capsys):
    mount = tmp_path / "read-only"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a read-only file system here")
    try:
        path = _write(tmp_path, {**EXPERIMENT, "directory": str(mount / "runs")})
        _one_line_error(capsys, ["launch", str(path)], r"experiment.yaml: directory: cannot write .*runs: Read-only "
                                                      r"file system")
    finally:
        subprocess.run(["umount", str(mount)], check=False)
