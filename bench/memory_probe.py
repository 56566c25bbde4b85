"""Run each command given once, as the bot would (charts in worker processes), then print whether the member data
got loaded (a line "member data loaded: True/False") and, last, the peak RSS in KiB of this process, of the largest
process below it (the forkserver and render workers), and their count."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import open_resources
from console import answer
from services.config import Settings


def own_peak_kb() -> int:
    """VmHWM, not getrusage's ru_maxrss: on Linux the latter keeps the parent's peak across fork + exec."""
    return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0])


def descendants_peak_kb() -> list[int]:
    """Peak RSS (VmHWM) of every process below this one."""
    parents, peaks = {}, {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        pid = int(status.parent.name)
        parents[pid] = int(fields["PPid"])
        peaks[pid] = int(fields.get("VmHWM", "0 kB").split()[0])
    mine, grew = {os.getpid()}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                grew = True
    return [peaks[pid] for pid in mine if pid != os.getpid()]


async def main(commands: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with open_resources(Settings(database_path=Path(tmp) / "m.db")) as res:
            await res.renderer.warm_up()
            for text in commands:
                await answer(res, text)
            helpers = descendants_peak_kb()
    from services.members import _data as member_data

    print("member data loaded:", member_data._data is not None)
    print(own_peak_kb(), max(helpers, default=0), len(helpers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
