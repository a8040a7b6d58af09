"""Starting NNI's manager the way mpqsearch needs it: on one address, patiently, quietly.

NNI's manager has no host option and no authentication (NNI issue #3594): its web UI and REST
server listen on every interface. A small Node preload script, passed through ``NODE_OPTIONS``,
makes every server it opens bind to the configured host (127.0.0.1 by default). NNI's launcher
gives the manager 3 seconds to answer, too few for a first start after installing (Node reads its
modules from a cold disk: a test run's first experiment failed so) or on a busy machine; here it
gets :data:`MANAGER_START_SECONDS`, without NNI's "Timeout, retry..." warnings, and the web UI
URLs printed are those that answer (NNI lists every interface of the machine).
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import psutil
from nni.experiment import launcher as nni_launcher

MANAGER_START_SECONDS = 30
PRELOAD_FILE = "listen-host.js"

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


class _QuietStart(logging.Filter):
    """Drops NNI's start-up noise: its "Timeout, retry..." warnings while the manager starts and
    its list of web UI URLs on every interface (:func:`web_ui_urls` prints those that answer)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Timeout, retry", "Web portal URLs"))


def preload_option(run_dir: Path) -> str:
    """The ``NODE_OPTIONS`` entry that loads the preload script (quoted: paths may hold spaces)."""
    return f"--require {shlex.quote(str(run_dir / PRELOAD_FILE))}"


@contextmanager
def manager_start(run_dir: Path, host: str, environment: Mapping[str, str] | None = None) -> Iterator[None]:
    """Inside the block, NNI's manager starts bound to ``host`` (module docstring), waited for up
    to :data:`MANAGER_START_SECONDS`, without NNI's start-up noise, with ``environment`` set (the
    manager passes it on to trials)."""
    (run_dir / PRELOAD_FILE).write_text(_PRELOAD)
    changes = {"NODE_OPTIONS": " ".join(filter(None, [os.environ.get("NODE_OPTIONS"), preload_option(run_dir)])),
               "MPQSEARCH_LISTEN_HOST": host, **(environment or {})}
    saved = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    check = nni_launcher._check_rest_server
    nni_launcher._check_rest_server = lambda port, retry=3, url_prefix=None: check(
        port, retry=max(retry, MANAGER_START_SECONDS), url_prefix=url_prefix)
    quiet = _QuietStart()
    nni_logger = logging.getLogger("nni.experiment")
    nni_logger.addFilter(quiet)
    try:
        yield
    finally:
        nni_logger.removeFilter(quiet)
        nni_launcher._check_rest_server = check
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
