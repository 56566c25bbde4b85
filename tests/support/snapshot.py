"""Snapshot files: JSON under tests/snapshots/, compared verbatim, rewritten when UPDATE_SNAPSHOTS=1.

    assert_snapshot("command_tree", data)   # fails with a unified diff when `data` differs from the file

Regenerate after an intended change with `UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/...`, then review the diff.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

SNAPSHOTS = Path(__file__).parents[1] / "snapshots"


def updating() -> bool:
    return os.environ.get("UPDATE_SNAPSHOTS", "").strip().lower() in ("1", "true", "yes")


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def assert_snapshot(name: str, data: Any, hint: str = "") -> None:
    """Compare `data` with tests/snapshots/<name>.json (or write it when UPDATE_SNAPSHOTS=1)."""
    path = SNAPSHOTS / f"{name}.json"
    text = dumps(data)
    if updating():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.exists():
        raise AssertionError(f"no snapshot {path}: create it with UPDATE_SNAPSHOTS=1 and review it")
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            f"{path.name} (snapshot)", f"{path.name} (now)", n=2))
        raise AssertionError(f"{hint}\nsnapshot {path} differs; if the change is intended, regenerate it with "
                             f"UPDATE_SNAPSHOTS=1 and review the diff:\n{diff}")
