"""Starting NNI's manager the way mpqsearch needs it: on one address, promptly, patiently, quietly,
and bound to the launcher's life.

NNI's manager has no host option and no authentication (NNI issue #3594): its web UI and REST
server listen on every interface. A small Node preload script, passed through ``NODE_OPTIONS``,
makes every server it opens bind to the configured host (127.0.0.1 by default).

A second preload shortens the manager's trial-management poll. NNI 3.0 sets it to 0.5 s for the
local training service (``core/nnimanager.js``, ``initTrainingService``) and sleeps that long
between noticing a trial's end, asking the tuner and submitting the next trial: about 1 s between
two trials, more than a whole warm trial of the ``example`` workload. The preload sets it to
``MPQSEARCH_NNI_POLL_SECONDS`` (:data:`POLL_SECONDS` by default; measurements in
``docs/nni-trials.md``); it changes nothing for other training services.

NNI starts its manager in a process group of its own, so a launcher killed with ``kill -9`` used to
leave it (and its tuner and trials) running. Here the manager is started with
``PR_SET_PDEATHSIG(SIGTERM)``: when the launcher's thread that started it ends, however it ends,
the manager shuts down gracefully (trials cancelled, tuner stopped, database consistent).

NNI's launcher gives the manager 3 seconds to answer, too few for a first start after installing
(Node reads its modules from a cold disk: a test run's first experiment failed so) or on a busy
machine; here it gets :data:`MANAGER_START_SECONDS`, without NNI's "Timeout, retry..." warnings,
and the web UI URLs printed are those that answer (NNI lists every interface of the machine).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import psutil
from nni.experiment import launcher as nni_launcher

from ..workers.processes import ProcessRecord, parent_death_preexec

MANAGER_START_SECONDS = 30
PRELOAD_FILE = "listen-host.js"
POLL_PRELOAD_FILE = "poll-interval.js"
POLL_VARIABLE = "MPQSEARCH_NNI_POLL_SECONDS"
POLL_SECONDS = 0.1

_PRELOAD = """// mpqsearch: make every server NNI's manager opens listen on one address only.
const net = require('net');
const host = process.env.MPQSEARCH_LISTEN_HOST || '127.0.0.1';
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\\d+$/.test(args[0]))) {
    if (typeof args[1] !== 'string') args.splice(1, 0, host);
  } else if (args[0] && typeof args[0] === 'object' && !args[0].path && !args[0].host) {
    args[0] = Object.assign({}, args[0], { host: host });
  }
  return listen.apply(this, args);
};
"""

_POLL_PRELOAD = """// mpqsearch: shorten NNI's trial-management poll (0.5 s for the local training service).
const Module = require('module');
const poll = parseFloat(process.env.MPQSEARCH_NNI_POLL_SECONDS || '0');
if (poll > 0) {
  const load = Module._load;
  Module._load = function (request, parent, isMain) {
    const exported = load.apply(this, arguments);
    if (exported && typeof exported.NNIManager === 'function' && !exported.NNIManager.mpqsearchPoll) {
      const init = exported.NNIManager.prototype.initTrainingService;
      exported.NNIManager.prototype.initTrainingService = async function (...args) {
        const service = await init.apply(this, args);
        if (this.pollInterval === 0.5) { this.pollInterval = poll; }  // the local (v3) service only
        return service;
      };
      exported.NNIManager.mpqsearchPoll = true;
    }
    return exported;
  };
}
"""


class _QuietStart(logging.Filter):
    """Drops NNI's start-up noise: its "Timeout, retry..." warnings while the manager starts and
    its list of web UI URLs on every interface (:func:`web_ui_urls` prints those that answer)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Timeout, retry", "Web portal URLs"))


def _node_require(path: Path) -> str:
    """``--require PATH`` as ``NODE_OPTIONS`` reads it: Node splits that variable at spaces unless
    they are inside double quotes (single quotes are not special to it), with ``\\`` and ``"``
    escaped by a backslash."""
    escaped = str(path).replace("\\", "\\\\").replace('"', '\\"')
    return f'--require "{escaped}"'


def preload_option(run_dir: Path) -> str:
    """The ``NODE_OPTIONS`` entries that load the preload scripts (quoted: paths may hold spaces)."""
    return " ".join(_node_require(run_dir / name) for name in (PRELOAD_FILE, POLL_PRELOAD_FILE))


def write_preloads(run_dir: Path) -> None:
    """Write the preload scripts into ``run_dir`` (for the launcher and for ``nnictl create``)."""
    (run_dir / PRELOAD_FILE).write_text(_PRELOAD)
    (run_dir / POLL_PRELOAD_FILE).write_text(_POLL_PRELOAD)


class ManagerHandle:
    """The manager started inside :func:`manager_start`, once NNI has started it."""

    def __init__(self) -> None:
        self.process: ProcessRecord | None = None


@contextmanager
def manager_start(run_dir: Path, host: str, environment: Mapping[str, str] | None = None) -> Iterator[ManagerHandle]:
    """Inside the block, NNI's manager starts bound to ``host``, with the short poll, dying with
    the calling thread (module docstring), waited for up to :data:`MANAGER_START_SECONDS`, without
    NNI's start-up noise, with ``environment`` set (the manager passes it on to trials). Yields a
    handle whose ``process`` is the manager once started."""
    write_preloads(run_dir)
    changes = {"NODE_OPTIONS": " ".join(filter(None, [os.environ.get("NODE_OPTIONS"), preload_option(run_dir)])),
               "MPQSEARCH_LISTEN_HOST": host, POLL_VARIABLE: os.environ.get(POLL_VARIABLE, str(POLL_SECONDS)),
               **(environment or {})}
    saved = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    check, popen, handle = nni_launcher._check_rest_server, nni_launcher.Popen, ManagerHandle()
    nni_launcher._check_rest_server = lambda port, retry=3, url_prefix=None: check(
        port, retry=max(retry, MANAGER_START_SECONDS), url_prefix=url_prefix)
    nni_launcher.Popen = _popen_dying_with_us(popen, handle)
    quiet = _QuietStart()
    nni_logger = logging.getLogger("nni.experiment")
    nni_logger.addFilter(quiet)
    try:
        yield handle
    finally:
        nni_logger.removeFilter(quiet)
        nni_launcher._check_rest_server = check
        nni_launcher.Popen = popen
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _popen_dying_with_us(popen: Any, handle: ManagerHandle) -> Any:
    """NNI's ``Popen`` for its manager, with ``PR_SET_PDEATHSIG(SIGTERM)`` added to its
    ``preexec_fn=os.setpgrp`` (the manager still leads its own process group)."""

    def start(command: Any, **kwargs: Any) -> Any:
        if kwargs.get("preexec_fn") is os.setpgrp:
            kwargs["preexec_fn"] = parent_death_preexec(signal.SIGTERM, new_group=True)
        process = popen(command, **kwargs)
        handle.process = ProcessRecord.of(process.pid)
        return process

    return start


def web_ui_urls(host: str, port: int) -> list[str]:
    """The web UI's URLs that answer: ``host``'s, or for a wildcard host (``0.0.0.0``, ``::``)
    every IPv4 address of this machine's interfaces on which the manager answers."""
    if host in ("0.0.0.0", "::", ""):
        candidates = [address.address for addresses in psutil.net_if_addrs().values() for address in addresses
                      if address.family == socket.AF_INET]
    else:
        candidates = [host]
    urls = []
    for address in candidates:
        url = f"http://{address}:{port}"
        try:
            with urllib.request.urlopen(f"{url}/api/v1/nni/check-status", timeout=5):
                urls.append(url)
        except OSError:
            continue
    return urls


def print_web_ui(host: str, port: int, out: TextIO | None = None) -> None:
    urls = web_ui_urls(host, port)
    text = " ".join(urls) if urls else f"nothing answers on {host}:{port}"
    print(f"  web UI: {text}", file=out or sys.stdout, flush=True)
