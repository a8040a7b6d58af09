"""A throwaway PostgreSQL server on 127.0.0.1, for tests and benchmarks (Debian's postgresql).

    with throwaway_postgres() as url:      # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
        ...

``initdb`` refuses to run as root, so as root the data directory is handed to the ``postgres``
system user and every server command runs as that user (``runuser``). The server listens on
127.0.0.1 only, on a free port, its Unix socket in the data directory, with trust authentication
(loopback only, for the test's lifetime) and without fsync (nothing to keep across a crash); it
is stopped and removed on exit. :class:`PostgresUnavailable` says why it cannot start.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """No server could be started here; the message says why."""


def server_bindir() -> Path:
    """The newest Debian PostgreSQL server's binaries."""
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                            if Path(p).parent.name.isdigit() else 0, reverse=True):
        if os.access(Path(directory) / "initdb", os.X_OK) and os.access(Path(directory) / "pg_ctl", os.X_OK):
            return Path(directory)
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl); on Debian: apt-get install postgresql")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable("running as root and there is no 'postgres' user to run the server as") from None
    if not shutil.which("runuser"):
        raise PostgresUnavailable("running as root without runuser to start the server as 'postgres'")
    return ["runuser", "-u", "postgres", "--"]


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A running server's URL for the block (database ``postgres``)."""
    try:
        import psycopg  # noqa: F401 - the driver mpqsearch's postgres extra installs
    except ImportError:
        raise PostgresUnavailable("the psycopg driver is not installed (pip install -e '.[postgres]')") from None
    bindir, prefix = server_bindir(), _as_server_user()
    data = Path(tempfile.mkdtemp(prefix="mpqsearch-pg-", dir="/tmp"))  # the server user must reach it
    try:
        if prefix:
            entry = pwd.getpwnam("postgres")
            os.chown(data, entry.pw_uid, entry.pw_gid)
        os.chmod(data, 0o700)
        pgdata = data / "data"

        def run(*command: object) -> subprocess.CompletedProcess:
            return subprocess.run([*prefix, *map(str, command)], capture_output=True, text=True, timeout=120)

        result = run(bindir / "initdb", "-D", pgdata, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        if result.returncode:
            raise PostgresUnavailable(f"initdb failed: {(result.stderr or result.stdout).strip()[-300:]}")
        options = f"-c listen_addresses=127.0.0.1 -k {data} -c fsync=off -c synchronous_commit=off"
        for _ in range(3):
            port = _free_port()
            result = run(bindir / "pg_ctl", "start", "-w", "-t", "60", "-D", pgdata, "-l", data / "server.log",
                         "-o", f"{options} -p {port}")
            if result.returncode == 0:
                break
        else:
            log = data / "server.log"
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else [result.stderr]
            raise PostgresUnavailable("the server did not start: " + " | ".join(tail))
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(bindir / "pg_ctl", "stop", "-D", pgdata, "-m", "immediate", "-w", "-t", "30")
    finally:
        shutil.rmtree(data, ignore_errors=True)


def new_database(server_url: str) -> str:
    """A fresh, empty database on the server at ``server_url``; its URL."""
    import sqlalchemy

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"
