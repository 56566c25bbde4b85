"""A throwaway PostgreSQL cluster for the tests: initdb in a temp folder, a server on a unix socket in it, stopped
at the end. `postgres` (session) is the server's URL; `postgres_url(server)` gives each test its own schema."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest


def _bin_dir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not versions:
        pytest.fail("PostgreSQL is not installed (initdb/pg_ctl not found): install the distribution's postgresql "
                    "package to run the tests on the PostgreSQL engine")
    return Path(versions[-1]).parent


def _as_cluster_owner(args: list[str]) -> list[str]:
    """initdb refuses to run as root: run the server as the distribution's postgres user then."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    bin_dir = _bin_dir()
    folder = Path(tempfile.mkdtemp(prefix="pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data = folder / "data"
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run(_as_cluster_owner([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                      "--no-sync"]), **run)  # type: ignore[call-overload]
    options = f"-k {folder} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
    subprocess.run(_as_cluster_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                                      str(folder / "log"), "-w", "start"]), **run)  # type: ignore[call-overload]
    try:
        yield f"postgresql://postgres@/postgres?host={folder}"
    finally:
        subprocess.run(_as_cluster_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def schema_url(server: str) -> Iterator[str]:
    """A fresh, empty schema on the server, as a URL whose search_path is that schema; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield f"{server}&options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")
