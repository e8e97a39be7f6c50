"""Shared timing helper for the benchmark scripts: median wall time of repeated calls."""
from __future__ import annotations

import statistics
import time


def median_time(fn, repeat: int = 30, warmup: int = 5, inner: int = 1) -> float:
    """Median seconds per call of ``fn`` over ``repeat`` samples of ``inner`` calls each."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def report(rows: list[tuple[str, float]], baseline: str | None = None) -> None:
    """Print ``name  median`` rows and, with a baseline, each row's ratio to it."""
    times = dict(rows)
    for name, t in rows:
        ratio = f"   {t / times[baseline]:.2f}x {baseline}" if baseline and baseline in times \
            and name != baseline else ""
        unit = f"{t * 1e6:9.1f} us" if t < 1e-3 else f"{t * 1e3:9.2f} ms"
        print(f"  {name:<34} {unit}{ratio}")
