"""Benchmarks of the member answers (`/iwm breadth`, `/iwm valuation`): whole console answers against bare imports,
warm answers against their chart render alone, start-up with member data (lazily loaded), peak RSS with it loaded.

bench/run.py imports this module to list its BENCHES, so the helpers of bench/run.py are imported when a benchmark
runs, not at import time (either import order then works).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.run import Result

ROOT = Path(__file__).resolve().parent.parent
BARE = "import discord, pandas, matplotlib"
MEMBER_COMMANDS = ("/iwm breadth", "/iwm valuation", "/iwm sectors")


def _env() -> dict[str, str]:
    """The environment of the measured processes: bytecode cached as an installed bot has it (the bare imports'
    site-packages come compiled; PYTHONDONTWRITEBYTECODE would have every console run compile the project's
    hundred-odd modules again, about 130 ms that no deployed bot pays)."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPATH": str(ROOT)}


def _result(*args: Any, **kwargs: Any) -> Result:
    from bench.run import Result

    return Result(*args, **kwargs)


def _median_ms(samples: list[float]) -> float:
    from bench.run import median_ms

    return median_ms(samples)


def _run(args: list[str], cwd: Path, cpu: list[float] | None = None) -> float:
    """Wall seconds of a process; its CPU seconds (user + system) appended to `cpu`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, check=True, env=_env(), cwd=cwd, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return wall


def _console_vs_imports(command: str, rounds: int) -> tuple[list[float], list[float], float]:
    """Seconds of whole `python bot.py console COMMAND` runs and of bare imports, interleaved, and the ratio of
    their median CPU seconds (steadier than wall time when other work shares the cores)."""
    ours: list[float] = []
    base: list[float] = []
    ours_cpu: list[float] = []
    base_cpu: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        console = [sys.executable, str(ROOT / "bot.py"), "console", "--out", tmp, command]
        _run(console, Path(tmp))  # warm the OS file cache, matplotlib's font cache and the bytecode cache
        for _ in range(rounds):
            ours.append(_run(console, Path(tmp), ours_cpu))
            base.append(_run([sys.executable, "-c", BARE], Path(tmp), base_cpu))
    return ours, base, statistics.median(ours_cpu) / statistics.median(base_cpu)


def _console_result(name: str, command: str, rounds: int) -> Result:
    ours, base, cpu_ratio = _console_vs_imports(command, rounds)
    ratio = statistics.median(ours) / statistics.median(base)
    return _result(name, f"{_median_ms(ours):.0f} ms", f"imports alone {_median_ms(base):.0f} ms", ratio,
                   "<= 2x", ratio <= 2, {"cpu_ratio": round(cpu_ratio, 2)})


def bench_breadth_console(rounds: int) -> Result:
    """A whole `/iwm breadth` console answer (process start to exit) against `import discord, pandas, matplotlib`."""
    return _console_result("breadth console", "/iwm breadth", rounds)


def bench_valuation_console(rounds: int) -> Result:
    return _console_result("valuation console", "/iwm valuation", rounds)


async def _warm_vs_render(name: str, command: str, rounds: int) -> Result:
    """The second and later in-process answers of `command` against rendering its chart alone (the chart spec
    the answer rendered, captured from the renderer)."""
    from app import open_resources
    from bench.run import atimed, timed
    from console import answer
    from services.config import Settings

    captured: list[tuple[Callable[[Any], bytes], Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with open_resources(Settings(database_path=Path(tmp) / "w.db"), render_processes=False) as res:
            render = res.renderer.render

            async def spy(fn: Callable[[Any], bytes], spec: Any) -> bytes:
                captured.append((fn, spec))
                return await render(fn, spec)

            res.renderer.render = spy  # type: ignore[method-assign]
            status, _ = await answer(res, command)  # cold: loads the member data, computes the breadth series
            assert status == 0, command
            fn, spec = captured[-1]
            answers, renders = [], []
            for _ in range(rounds):
                answers.append(await atimed(answer(res, command)))
                renders.append(timed(lambda: fn(spec)))
    ratio = statistics.median(answers) / statistics.median(renders)
    return _result(name, f"{_median_ms(answers):.0f} ms", f"render {_median_ms(renders):.0f} ms", ratio,
                   "<= 1.5x", ratio <= 1.5)


async def bench_breadth_warm(rounds: int) -> Result:
    return await _warm_vs_render("breadth warm", "/iwm breadth", rounds)


async def bench_valuation_warm(rounds: int) -> Result:
    return await _warm_vs_render("valuation warm", "/iwm valuation", rounds)


LAZY = """
import services.members._data as member_data
print("member data loaded at start-up:", member_data._data is not None)
"""


def bench_member_startup(rounds: int) -> Result:
    """The bot's start-up (every cog loaded) against bare imports, and that the member data is not loaded by it."""
    from bench.run import READY

    out = subprocess.run([sys.executable, "-c", READY + LAZY], check=True, env=_env(), cwd=ROOT, capture_output=True,
                         text=True).stdout
    lazy = "member data loaded at start-up: False" in out
    ours, base = [], []
    for _ in range(max(5, rounds)):
        ours.append(_run([sys.executable, "-c", READY], ROOT))
        base.append(_run([sys.executable, "-c", BARE], ROOT))
    ratio = statistics.median(ours) / statistics.median(base)
    return _result("member start-up", f"{_median_ms(ours):.0f} ms", f"imports alone {_median_ms(base):.0f} ms",
                   ratio, "<= 1.3x, lazy", ratio <= 1.3 and lazy, {"member_data_lazy": lazy})


def bench_member_memory(rounds: int) -> Result:
    """Peak RSS of the bot after the member commands (member data loaded), through bench/memory_probe.py."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "memory_probe.py"), *MEMBER_COMMANDS], check=True,
                         env=_env(), cwd=ROOT, capture_output=True, text=True).stdout
    loaded = "member data loaded: True" in out
    main_kb, worker_kb, _ = (int(x) for x in out.split()[-3:])
    peak_mb = main_kb / 1024
    return _result("member memory", f"peak RSS {peak_mb:.0f} MB", ", ".join(MEMBER_COMMANDS), None, "< 250 MB",
                   peak_mb < 250 and loaded,
                   {"member_data_loaded": loaded, "largest_render_process_mb": round(worker_kb / 1024)})


BENCHES: dict[str, Callable[[int], Any]] = {
    "breadth_console": bench_breadth_console, "valuation_console": bench_valuation_console,
    "breadth_warm": bench_breadth_warm, "valuation_warm": bench_valuation_warm,
    "member_startup": bench_member_startup, "member_memory": bench_member_memory,
}
