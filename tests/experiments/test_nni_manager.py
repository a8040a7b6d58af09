"""The NNI manager's start-up pieces and its record, without starting NNI: the Node preloads
(run by NNI's own Node), dying with the launcher, finding and ending a stale manager, and the
one-line refusals (busy port, interpreter path with a space)."""

import io
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import nni_node
import pytest

from mpqsearch.experiments import launcher
from mpqsearch.experiments.config import ConfigError, load_config
from mpqsearch.experiments.drivers.nni import NniDriver
from mpqsearch.experiments.drivers.nni_manager import POLL_VARIABLE, preload_option, write_preloads
from mpqsearch.experiments.drivers.nni_manager_record import (
    ManagerRecord,
    end_managers,
    live_managers,
    write_manager_record,
)
from mpqsearch.experiments.workers.processes import ProcessRecord, start_time, wait_gone

NODE = str(Path(nni_node.__path__[0]) / "node")
FAKE_MANAGER_JS = """
class NNIManager { async initTrainingService(kind) { this.pollInterval = kind === 'local' ? 0.5 : 5; return kind; } }
exports.NNIManager = NNIManager;
"""


def _node(code, run_dir, tmp_path, **env):
    (tmp_path / "nnimanager.js").write_text(FAKE_MANAGER_JS)
    environment = {"PATH": "/usr/bin:/bin", "NODE_OPTIONS": preload_option(run_dir), **env}
    return subprocess.run([NODE, "-e", code.replace("MODULE", str(tmp_path / "nnimanager.js"))], env=environment,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("poll,kind,expected", [("0.1", "local", "0.1"), ("0", "local", "0.5"),
                                                ("0.1", "kubeflow", "5")])
def test_the_poll_preload_shortens_only_the_local_services_poll(tmp_path, poll, kind, expected):
    run_dir = tmp_path / 'run dir with "spaces" and \\ backslash'
    run_dir.mkdir()
    write_preloads(run_dir)
    code = f"const m = require('MODULE'); const n = new m.NNIManager(); " \
           f"n.initTrainingService('{kind}').then(() => console.log(n.pollInterval));"
    result = _node(code, run_dir, tmp_path, **{POLL_VARIABLE: poll})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_the_listen_preload_loads_from_a_path_with_spaces(tmp_path):
    run_dir = tmp_path / "a b"
    run_dir.mkdir()
    write_preloads(run_dir)
    code = ("const s = require('net').createServer(); s.listen(0, () => { console.log(s.address().address); "
            "s.close(); });")
    result = _node(code, run_dir, tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "127.0.0.1", result.stderr


def test_a_child_started_to_die_with_its_launcher_does(tmp_path):
    launcher_code = textwrap.dedent("""
        import signal, subprocess, sys, time
        from mpqsearch.experiments.workers.processes import parent_death_preexec
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                 preexec_fn=parent_death_preexec(signal.SIGTERM))
        print(child.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", launcher_code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()  # kill -9: no handler, no atexit
    parent.wait()
    assert wait_gone(child, 30)


def _fake_manager(run_dir, experiment_id):
    """A process whose command line is NNI's manager's for ``experiment_id`` in ``run_dir``."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "/x/nni_node/main.js",
                             "--port", "18699", "--experiment-id", experiment_id, "--experiments-directory",
                             str(run_dir / "nni")], start_new_session=True)


def test_a_stale_manager_is_found_by_its_record_and_command_line_and_ended(tmp_path):
    run_dir = tmp_path / "run"
    manager = _fake_manager(run_dir, "abcd1234")
    other = _fake_manager(tmp_path / "elsewhere", "abcd1234")  # the same ID in another run directory
    try:
        write_manager_record(run_dir, ManagerRecord("abcd1234", ProcessRecord.of(manager.pid), 18699, None))
        assert live_managers(run_dir, "abcd1234") == [manager.pid]
        assert end_managers(run_dir, "abcd1234", grace=10) == [manager.pid]
        assert manager.wait(10) is not None and start_time(other.pid) is not None
    finally:
        other.kill()
        manager.kill()
        other.wait()


def test_a_recorded_pid_now_used_by_another_process_is_left_alone(tmp_path):
    run_dir = tmp_path / "run"
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        write_manager_record(run_dir, ManagerRecord("abcd1234", ProcessRecord(bystander.pid, 1), 18699, None))
        assert live_managers(run_dir, "abcd1234") == [] and end_managers(run_dir, "abcd1234") == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_busy_port_is_one_line_naming_the_flag(experiment_file, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = launcher.apply_overrides(load_config(experiment_file(driver="nni")), port=port)
        with pytest.raises(ConfigError, match=rf"^--port: {port} is in use .*choose another with --port"):
            launcher.launch(config, out=io.StringIO())


def test_an_interpreter_path_with_a_space_is_refused_in_one_line(experiment_file, monkeypatch):
    config = load_config(experiment_file(driver="nni"))
    monkeypatch.setattr(sys, "executable", "/opt/my tools/bin/python")
    with pytest.raises(ConfigError, match="interpreter's path '/opt/my tools/bin/python' holds a space"):
        NniDriver.check(config)
