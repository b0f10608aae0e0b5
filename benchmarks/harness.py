"""Timing, statistics and output: a table, a JSON file and a chart. No database here.

Implementations are interleaved within each round (in a rotating order), so
noise from other processes on the machine spreads over all of them alike; each
figure is the median of one call per round, with its min and max.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

Call = Callable[[int], Awaitable[Any]]
Prepare = Callable[[int], Awaitable[Any]]


@dataclass
class Entry:
    """One implementation of one operation: how to prepare it (untimed) and run it (timed)."""

    impl: str
    call: Call
    prepare: Prepare | None = None


@dataclass
class Result:
    backend: str
    op: str
    impl: str
    median_us: float
    min_us: float
    max_us: float
    rounds: int
    sessions: int | None = None
    note: str = ""
    ratios: dict[str, float] = field(default_factory=dict)


async def measure(
    backend: str,
    op: str,
    entries: Sequence[Entry],
    *,
    rounds: int,
    warmup: int,
    sessions: int | None = None,
) -> list[Result]:
    timings: dict[str, list[float]] = {entry.impl: [] for entry in entries}
    for round_index in range(-warmup, rounds):
        shift = round_index % len(entries)
        for entry in [*entries[shift:], *entries[:shift]]:
            index = round_index + warmup
            if entry.prepare is not None:
                await entry.prepare(index)
            start = time.perf_counter_ns()
            await entry.call(index)
            elapsed = (time.perf_counter_ns() - start) / 1000
            if round_index >= 0:
                timings[entry.impl].append(elapsed)
    return [
        Result(
            backend,
            op,
            impl,
            statistics.median(values),
            min(values),
            max(values),
            len(values),
            sessions,
        )
        for impl, values in timings.items()
    ]


def add_ratios(results: list[Result], references: Sequence[str]) -> None:
    """Each figure divided by the reference implementations' figures for the same operation."""
    by_key = {(r.backend, r.op, r.sessions, r.impl): r for r in results}
    for result in results:
        for reference in references:
            other = by_key.get((result.backend, result.op, result.sessions, reference))
            if other is not None and result.impl != reference:
                result.ratios[reference] = result.median_us / other.median_us


def format_table(results: list[Result], references: Sequence[str]) -> str:
    headers = ["backend", "operation", "implementation", "median µs", "min", "max"]
    headers += [f"x {name}" for name in references]
    lines = [headers]
    for r in results:
        op = r.op if r.sessions is None else f"{r.op} @ {r.sessions:,}"
        row = [r.backend, op, r.impl, f"{r.median_us:,.0f}", f"{r.min_us:,.0f}", f"{r.max_us:,.0f}"]
        row += [f"{r.ratios[name]:.2f}" if name in r.ratios else "" for name in references]
        lines.append(row)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(headers))]
    text = []
    for number, line in enumerate(lines):
        cells = [
            str(cell).ljust(width) if i < 3 else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        text.append("  ".join(cells).rstrip())
        if number == 0:
            text.append("  ".join("-" * width for width in widths))
    return "\n".join(text)


def write_json(path: Path, results: list[Result], info: dict[str, Any]) -> None:
    path.write_text(
        json.dumps({"info": info, "results": [asdict(r) for r in results]}, indent=2) + "\n"
    )


def write_chart(path: Path, results: list[Result]) -> bool:
    """Median time against table size for the scaling runs; False when there are none."""
    scaled = [r for r in results if r.sessions is not None]
    if not scaled:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = sorted({r.op for r in scaled})
    figure, axes = plt.subplots(1, len(ops), figsize=(5 * len(ops), 4), squeeze=False)
    for axis, op in zip(axes[0], ops, strict=True):
        for impl in sorted({r.impl for r in scaled if r.op == op}):
            points = sorted((r.sessions, r) for r in scaled if r.op == op and r.impl == impl)
            sizes = [size for size, _ in points]
            axis.errorbar(
                sizes,
                [r.median_us / 1000 for _, r in points],
                yerr=[
                    [(r.median_us - r.min_us) / 1000 for _, r in points],
                    [(r.max_us - r.median_us) / 1000 for _, r in points],
                ],
                marker="o",
                capsize=3,
                label=impl,
            )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_title(f"{op} (PostgreSQL)")
        axis.set_xlabel("sessions (10 keys each)")
        axis.set_ylabel("median ms (bars: min-max)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def write_ratio_chart(path: Path, results: list[Result], impl: str, floors: dict[str, str]) -> bool:
    """``impl``'s median over each backend's floor, per operation: one group of bars per
    operation, one bar per backend, a line at 1.5x. False when nothing has a ratio."""
    ratios = {
        (r.backend, r.op): r.ratios[floors[r.backend]]
        for r in results
        if r.impl == impl and r.sessions is None and floors.get(r.backend) in r.ratios
    }
    if not ratios:
        return False
    try:
        import matplotlib
    except ImportError:
        print("no ratio chart: matplotlib is not installed (the bench group)")
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = list(dict.fromkeys(op for _, op in ratios))
    backends = list(dict.fromkeys(backend for backend, _ in ratios))
    width = 0.8 / len(backends)
    figure, axis = plt.subplots(figsize=(max(8, 1.3 * len(ops)), 4.5))
    for number, backend in enumerate(backends):
        positions = [
            index + (number - (len(backends) - 1) / 2) * width for index in range(len(ops))
        ]
        heights = [ratios.get((backend, op), 0.0) for op in ops]
        bars = axis.bar(positions, heights, width, label=f"{backend} (÷ {floors[backend]})")
        axis.bar_label(bars, fmt="%.2f", fontsize="x-small", padding=1)
    axis.axhline(1.5, color="grey", linestyle="--", linewidth=1, label="1.5x target")
    axis.set_xticks(range(len(ops)), ops, rotation=30, ha="right", fontsize="small")
    axis.set_ylabel(f"{impl} median ÷ floor")
    axis.set_title(f"{impl} against a hand-written statement on a held connection")
    axis.legend(fontsize="small")
    axis.grid(True, axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
