"""Files shipped in services/data/ (see services/data/SOURCES.md): the offline source and the last-resort fallback
of market data and documents alike."""

from __future__ import annotations

import functools
import gzip
import io
from importlib import resources
from pathlib import Path


def data_file(name: str) -> io.BytesIO:
    """A bundled data file, decompressed."""
    raw = resources.files("services").joinpath("data", name).read_bytes()
    return io.BytesIO(gzip.decompress(raw) if name.endswith(".gz") else raw)


@functools.cache
def bundled_text(name: str) -> str:
    """A bundled file's text (BOM dropped), read once per process: package data never changes while the bot runs."""
    return data_file(name).read().decode("utf-8-sig")


def data_path(name: str) -> Path:
    """A bundled data file's path on disk, for readers that map it rather than read it (np.load(mmap_mode=...))."""
    return Path(str(resources.files("services").joinpath("data", name)))
