"""Timing helpers shared by the benchmark scripts.

The machine may be shared: load comes and goes within seconds.  Contenders are therefore timed
in alternation, round after round (:func:`interleaved`), so they see the same load, and a ratio
is reported as the median of the per-round ratios, which survives drifting load far better than
the ratio of two medians taken one block after another.

Runtimes leave threads spinning after they return — OpenBLAS's helpers for about 0.1 s after a
multi-threaded product, PyTorch's OpenMP team and onnxruntime's pool for a while too.  On a
2-core machine a spinning peer halves the cores of whoever runs next, so each turn starts with a
short pause (``settle``) that lets the previous contender's threads go idle, then one untimed
call that wakes the contender's own threads, then the timed calls, back to back, as the
contender's own user would run them.  The order also rotates every round.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable


def interleaved(fns: dict[str, Callable[[], object]], repeat: int = 30, warmup: int = 3,
                inner: int = 1, settle: float = 0.15) -> dict[str, list[float]]:
    """Seconds per call of each function, one sample per round, contenders taking turns."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for round_ in range(repeat):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            fn = fns[name]
            if len(names) > 1:
                time.sleep(settle)
                fn()
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - start) / inner)
    return samples


def median_time(fn: Callable[[], object], repeat: int = 30, warmup: int = 3,
                inner: int = 1) -> float:
    """Median seconds per call of one function."""
    return statistics.median(interleaved({"fn": fn}, repeat, warmup, inner)["fn"])


def ratio(samples: dict[str, list[float]], name: str, baseline: str) -> float:
    """Median over rounds of ``name``'s time divided by ``baseline``'s in the same round."""
    return statistics.median(a / b for a, b in zip(samples[name], samples[baseline]))


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:9.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:9.2f} ms"
    return f"{seconds:9.3f} s "


def report(samples: dict[str, list[float]], baseline: str | None = None) -> None:
    """Print each contender's median and, with a baseline, its per-round ratio to it."""
    for name, times in samples.items():
        line = f"  {name:<34} {_fmt(statistics.median(times))}"
        if baseline and name != baseline and baseline in samples:
            line += f"   {ratio(samples, name, baseline):.2f}x {baseline}"
        print(line)
