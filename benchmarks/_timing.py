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

Threads
-------
Every contender gets the same number of threads: a script calls :func:`set_threads` (it reads
``--threads N``, default 1, 0 = all cores) *before* numpy, numba, torch or onnxruntime is
imported, then :func:`import_torch` / :func:`ort_options` give the peers that take the count at
run time the same number, and :func:`thread_header` prints the count each runtime really
reports (numpy's OpenBLAS is asked through ctypes) with a warning if one differs.
``benchmarks/run_all.py`` runs every script at 1 thread (the primary figure: stable under
neighbours' load) and at the machine's core count.

Machine-readable lines
----------------------
Besides its human-readable lines a script prints one line per figure that ``run_all.py``
collects (:func:`emit_ratio`, :func:`emit_value`; :func:`report` emits the ratio lines itself)::

    RATIO: <row> | <value> | <peer> [| <target>]
    VALUE: <row> | <value> | <unit> [| <target>]

Fields are separated by ``" | "`` (so names must not contain it); ``<value>`` is a Python float.
A RATIO is the row's figure (usually flowgrad's) divided by the peer's, measured in the same
process (for times: the median of per-round ratios, so below 1 means the row is faster); a VALUE is an absolute figure
(seconds, MB).  ``<target>`` is free text such as ``<= 0.8``.  A row name repeated within one
run (among the RATIO or among the VALUE lines) is numbered by the parser (``row (2)``).

Scripts opt out of a thread setting of ``run_all.py`` with a top-level ``RUN_ALL_THREADS = (1,)``
(0 stands for all cores) and get extra arguments from it with ``RUN_ALL_ARGS = ["--repeat",
"10"]``; both are read from the source, not imported.
"""
from __future__ import annotations

import ctypes
import os
import statistics
import sys
import time
from typing import Callable

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                "FLOWGRAD_NUM_THREADS")
THREADS: int | None = None          # what set_threads chose


def set_threads(default: int = 1) -> int:
    """Give every contender the same number of threads: ``--threads N`` on the command line
    (default 1; ``--threads 0`` means the machine's core count).

    Call it before numpy, numba, torch or onnxruntime is imported: BLAS and OpenMP read their
    thread counts from the environment when they load.  Then give the same count to the peers
    that take it at run time: ``torch.set_num_threads(n)`` (:func:`import_torch` does), and
    onnxruntime's ``SessionOptions.intra_op_num_threads = n`` (see :func:`ort_options`).
    """
    global THREADS
    n = default
    if "--threads" in sys.argv:
        i = sys.argv.index("--threads")
        try:
            n = int(sys.argv[i + 1])
        except (IndexError, ValueError):
            sys.exit("--threads needs a number (0: all cores)")
        del sys.argv[i:i + 2]
    if n <= 0:
        n = os.cpu_count() or 1
    late = [m for m in ("numpy", "torch", "onnxruntime", "numba") if m in sys.modules]
    if late:
        print(f"WARNING: set_threads() called after importing {', '.join(late)}: their "
              "thread pools may ignore it", file=sys.stderr)
    for var in _THREAD_VARS:
        os.environ[var] = str(n)
    THREADS = n
    return n


def import_torch(threads: int):
    """``torch`` with ``threads`` intra-op threads and one inter-op thread, or None (with a note
    on stdout) when PyTorch is not installed: the caller then skips the PyTorch rows."""
    try:
        import torch
    except ImportError:
        print("(PyTorch is not installed: its rows are skipped; pip install -e '.[bench]')")
        return None
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:            # only allowed before the first parallel work
        pass
    return torch


def import_onnxruntime():
    """``onnxruntime``, or None (with a note on stdout) when it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        print("(onnxruntime is not installed: its rows are skipped; pip install -e '.[bench]')")
        return None
    return onnxruntime


def ort_options(threads: int):
    """onnxruntime session options with ``threads`` intra-op threads, default optimizations."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def openblas_info() -> tuple[str, int] | None:
    """(config string, thread count) of the OpenBLAS numpy loaded, asked through ctypes; None
    when numpy is not imported or its BLAS is not an OpenBLAS found in this process's maps."""
    if "numpy" not in sys.modules:
        return None
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_", "64_"), ("", "64_"), ("scipy_", ""), ("", "")):
            get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
            config = getattr(lib, f"{prefix}openblas_get_config{suffix}", None)
            if get is None:
                continue
            name = "OpenBLAS"
            if config is not None:
                config.restype = ctypes.c_char_p
                name = config().decode(errors="replace").split("  ")[0]
            return name, int(get())
    return None


def thread_header(threads: int) -> str:
    """One line naming the thread count each loaded runtime reports; warns on stderr (and in
    the line) when one differs from ``threads``."""
    parts, wrong = [], []
    blas = openblas_info()
    if blas is not None:
        parts.append(f"numpy {blas[0]}: {blas[1]}")
        if blas[1] != threads:
            wrong.append("numpy's BLAS")
    elif "numpy" in sys.modules:
        parts.append("numpy BLAS: not OpenBLAS, not checked")
    if "numba" in sys.modules:
        import numba
        parts.append(f"numba: {numba.get_num_threads()}")
        if numba.get_num_threads() != threads:
            wrong.append("numba")
    else:
        parts.append("numba not loaded yet: NUMBA_NUM_THREADS="
                     + os.environ.get("NUMBA_NUM_THREADS", "unset"))
    if "flowgrad" in sys.modules:
        from flowgrad import parallel
        parts.append(f"flowgrad: {parallel.get_num_threads()}")
        if parallel.get_num_threads() != threads:
            wrong.append("flowgrad")
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        parts.append(f"torch: {torch.get_num_threads()} "
                     f"(inter-op {torch.get_num_interop_threads()})")
        if torch.get_num_threads() != threads:
            wrong.append("torch")
    if "onnxruntime" in sys.modules:
        parts.append(f"onnxruntime sessions: intra-op {threads}")
    line = f"threads: {threads} for every contender ({'; '.join(parts)})"
    if wrong:
        warning = f"WARNING: thread count differs from {threads} for {', '.join(wrong)}"
        print(warning, file=sys.stderr)
        line += "\n" + warning
    return line


def interleaved(fns: dict[str, Callable[[], object]], repeat: int = 30, warmup: int = 3,
                inner: int = 1, settle: float = 0.15, wake: bool = True
                ) -> dict[str, list[float]]:
    """Seconds per call of each function, one sample per round, contenders taking turns.

    ``wake=False`` drops the untimed call before each turn: for calls that take seconds (a
    whole training run) waking the threads is noise, and the extra call doubles the cost."""
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
                if wake:
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


def _field(text: str) -> str:
    text = " ".join(str(text).split())
    if " | " in text:
        raise ValueError(f"a row or peer name may not contain ' | ': {text!r}")
    return text


def emit_ratio(row: str, value: float, peer: str, target: str | None = None) -> None:
    """Print the machine-readable line of a ratio (see the module docstring)."""
    line = f"RATIO: {_field(row)} | {value:.6g} | {_field(peer)}"
    print(line + (f" | {_field(target)}" if target else ""), flush=True)


def emit_value(row: str, value: float, unit: str, target: str | None = None) -> None:
    """Print the machine-readable line of an absolute figure (see the module docstring)."""
    line = f"VALUE: {_field(row)} | {value:.6g} | {_field(unit)}"
    print(line + (f" | {_field(target)}" if target else ""), flush=True)


def parse_lines(text: str) -> list[dict]:
    """The RATIO and VALUE lines of a script's output, in order, as dicts with ``kind``
    (``"ratio"`` / ``"value"``), ``row``, ``value``, ``peer`` (ratios) or ``unit`` (values), and
    ``target`` (or None).  Malformed lines are skipped; repeated row names are numbered."""
    records, seen = [], {}
    for line in text.splitlines():
        for kind in ("RATIO", "VALUE"):
            if line.startswith(kind + ": "):
                fields = [f.strip() for f in line[len(kind) + 2:].split(" | ")]
                if len(fields) not in (3, 4):
                    break
                try:
                    value = float(fields[1])
                except ValueError:
                    break
                row = fields[0]
                seen[kind, row] = seen.get((kind, row), 0) + 1
                if seen[kind, row] > 1:
                    row = f"{row} ({seen[kind, row]})"
                record = {"kind": kind.lower(), "row": row, "value": value,
                          "target": fields[3] if len(fields) == 4 else None}
                record["peer" if kind == "RATIO" else "unit"] = fields[2]
                records.append(record)
                break
    return records


def report(samples: dict[str, list[float]], baseline: str | None = None,
           title: str | None = None, targets: dict[str, str] | None = None) -> None:
    """Print each contender's median and, with a baseline, its per-round ratio to it — the
    latter also as a ``RATIO:`` line, whose row is ``"<title>: <name>"`` (or just the name)
    and whose target is ``targets.get(name)``."""
    for name, times in samples.items():
        line = f"  {name:<34} {_fmt(statistics.median(times))}"
        if baseline and name != baseline and baseline in samples:
            line += f"   {ratio(samples, name, baseline):.2f}x {baseline}"
        print(line)
    if baseline and baseline in samples:
        for name in samples:
            if name != baseline:
                emit_ratio(f"{title}: {name}" if title else name,
                           ratio(samples, name, baseline), baseline,
                           (targets or {}).get(name))
