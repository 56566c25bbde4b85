"""Which process answers: its shards, its pid and host, and where its state lives (for `/iwm status`), so an operator
running several shard processes can tell them apart from Discord."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from services.config import Settings


def describe_process(settings: Settings, shard_ids: Sequence[int] | None, shard_count: int | None) -> list[str]:
    """Three lines: `shards 0, 3 of 4`, `pid 1234 on HOST`, `database SQLite smallcaps.db` (the file's name only;
    PostgreSQL's host and database, never a password). `shard_ids` None: every shard of `shard_count`."""
    count = shard_count or 1
    ids = sorted(shard_ids) if shard_ids is not None else list(range(count))
    shards = f"{'shard' if len(ids) == 1 else 'shards'} {', '.join(map(str, ids))} of {count}"
    return [shards, f"pid {os.getpid()} on {socket.gethostname()}", f"database {settings.database_location()}"]
