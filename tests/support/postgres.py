"""A throwaway PostgreSQL server for the tests: `initdb` into a temp dir, started on a unix socket only (no TCP),
one database created, stopped (`pg_ctl stop -m immediate`) and removed at the end, also when a step fails.

PostgreSQL refuses to run as root: as root (CI), the server runs as the unprivileged `postgres` user that Debian's
`postgresql` package creates, and owns the temp dir. Without server binaries the `postgres` fixture fails, unless
`SMALLCAPS_POSTGRES_OPTIONAL=1` says PostgreSQL is optional here, in which case it skips.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

OPTIONAL_ENV = "SMALLCAPS_POSTGRES_OPTIONAL"
SERVER_USER = "postgres"  # the unprivileged user the server runs as when the tests run as root
DATABASE = "smallcaps_test"


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries (initdb, pg_ctl) on this machine."""


def bindir() -> Path:
    """The directory holding initdb and pg_ctl: `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin
    (Debian installs the server there, off PATH), else PATH."""
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out:
            candidates.append(Path(out))
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(versions, key=lambda p: _version(Path(p).parent.name), reverse=True)]
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise PostgresMissing("no PostgreSQL server binaries (initdb, pg_ctl): install Debian's `postgresql` package "
                          f"(.ci/run does), or set {OPTIONAL_ENV}=1 to skip the PostgreSQL tests")


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(x) for x in name.split(".") if x.isdigit())


def _free_port() -> int:
    """A port no TCP listener holds: the server listens on no TCP port, but the number names its socket file and
    is what clients pass, so one that is free keeps a copied URL unambiguous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user() -> list[str]:
    """The command prefix that runs a server binary as a user PostgreSQL accepts: none unless we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresMissing(f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL as "
                              "(Debian's `postgresql` package creates it)") from None
    if shutil.which("runuser"):
        return ["runuser", "-u", SERVER_USER, "--"]
    return ["setpriv", f"--reuid={SERVER_USER}", f"--regid={SERVER_USER}", "--init-groups", "--"]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway cluster, create `smallcaps_test`, yield its URL
    (`postgresql://postgres@/smallcaps_test?host=<socket dir>&port=<port>`); stop and remove it on exit."""
    bin_ = bindir()
    prefix = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="smallcaps-pg-"))
    data, log = root / "data", root / "server.log"
    port = _free_port()

    def run(*args: str) -> None:
        result = subprocess.run([*prefix, *args], cwd=root, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                               f"{server_log}")

    try:
        if prefix:
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        run(str(bin_ / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync",
            "--encoding=UTF8", "--locale=C")
        run(str(bin_ / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
            f"-k {root} -c listen_addresses='' -p {port} -c fsync=off", "start")
        run(str(bin_ / "createdb"), "-h", str(root), "-p", str(port), "-U", "postgres", DATABASE)
        yield f"postgresql://postgres@/{DATABASE}?host={root}&port={port}"
    finally:
        _stop(bin_, prefix, data)
        shutil.rmtree(root, ignore_errors=True)


def _stop(bin_: Path, prefix: list[str], data: Path) -> None:
    """Stop the server however the session ends; if pg_ctl cannot, kill the postmaster it started (by its pid)."""
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().split("\n", 1)[0])
    subprocess.run([*prefix, str(bin_ / "pg_ctl"), "-D", str(data), "stop", "-m", "immediate", "-w", "-t", "30"],
                   cwd=data.parent, capture_output=True, check=False)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    os.kill(pid, signal.SIGKILL)  # its backends exit on their own once the postmaster is gone


@contextmanager
def schema_url(server: str) -> Iterator[str]:
    """A fresh, empty schema on the server, as a URL whose search_path is that schema (one per test: cheaper than
    a database); dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield f"{server}&options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")
