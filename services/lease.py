"""Leases: one process at a time does a piece of work that several share (an upstream fetch, the daily refresh).

A lease is a row in `leases` (name, holder, expires_at) that a process takes only when no other process holds it
or the holder's time has run out. The holder renews it while it works (`kept`) and deletes it when done; when the
work failed, it leaves the row to its time with the error, which the others share instead of trying again at once.
A holder that dies (kill -9, a lost machine) stops renewing, and its row lapses at `expires_at`: the next process
takes it over. Times come from the database server's clock, so processes on different machines agree on when a
lease lapses.

Only on PostgreSQL, where several processes share one database. On SQLite there is one process (its in-process
single flight is enough) and `Leases.enabled` is False: `take` hands out every lease at once, touching nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from services.sql import Connection
from services.storage import Database

TABLE = "leases"
NOW = "extract(epoch from clock_timestamp())"  # the server's clock, in seconds: every process reads the same one
TAKE = (f"INSERT INTO {TABLE} (name, holder, expires_at) VALUES (?, ?, {NOW} + ?) "
        "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at, error = NULL "
        f"WHERE {TABLE}.expires_at <= {NOW} RETURNING holder")
RENEW = f"UPDATE {TABLE} SET expires_at = {NOW} + ? WHERE name = ? AND holder = ?"
RELEASE = f"DELETE FROM {TABLE} WHERE name = ? AND holder = ?"
FAIL = f"UPDATE {TABLE} SET error = ? WHERE name = ? AND holder = ?"
HELD = f"SELECT error FROM {TABLE} WHERE name = ? AND expires_at > {NOW}"
PROCESS = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str  # this process and this taking of it: a lease taken over by another process is not ours to drop


class Leases:
    """The leases in one database (see the module docstring)."""

    def __init__(self, database: Database | None) -> None:
        self.database = database

    @property
    def enabled(self) -> bool:
        """True when other processes may share the database (PostgreSQL): only then do leases mean anything."""
        return self.database is not None and self.database.engine == "postgresql"

    async def take(self, name: str, seconds: float) -> Lease | None:
        """The lease `name` for `seconds`, or None while another process holds it."""
        lease = Lease(name, f"{PROCESS}:{uuid.uuid4().hex[:8]}")
        if not self.enabled:
            return lease
        assert self.database is not None

        def take(db: Connection) -> bool:
            return db.execute(TAKE, [lease.name, lease.holder, seconds]).fetchone() is not None

        return lease if await self.database.run(take) else None

    async def renew(self, lease: Lease, seconds: float) -> bool:
        """Hold `lease` for `seconds` more; False when it lapsed and another process has taken it over."""
        if not self.enabled:
            return True
        assert self.database is not None
        return bool(await self.database.run(lambda db: db.execute(RENEW, [seconds, lease.name, lease.holder]).rowcount))

    @contextlib.asynccontextmanager
    async def kept(self, lease: Lease | None, seconds: float) -> AsyncIterator[None]:
        """Renew `lease` for `seconds` every third of that while the block runs, so however long the work takes the
        lease lapses only when this process stops (dies, or its event loop stands still that long)."""
        if lease is None or not self.enabled:
            yield
            return

        async def keep() -> None:
            while True:
                await asyncio.sleep(seconds / 3)
                if not await self.renew(lease, seconds):
                    return

        keeper = asyncio.create_task(keep())
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def release(self, lease: Lease) -> None:
        """Let go of `lease` (nothing when it lapsed and another process holds it now)."""
        if self.enabled:
            assert self.database is not None
            await self.database.run(lambda db: db.execute(RELEASE, [lease.name, lease.holder]))

    async def fail(self, lease: Lease, error: str) -> None:
        """The work failed: keep `lease` to its time, with `error` for the processes waiting on it (`failed`)."""
        if self.enabled:
            assert self.database is not None
            await self.database.run(lambda db: db.execute(FAIL, [error, lease.name, lease.holder]))

    async def held(self, name: str) -> tuple[bool, str | None]:
        """(whether a process holds `name` now, the error its work failed with when it did): a read only, for
        waiting on another process's lease without writing to the table."""
        if not self.enabled:
            return False, None
        assert self.database is not None
        row = await self.database.run(lambda db: db.execute(HELD, [name]).fetchone())
        return row is not None, None if row is None else row[0]
