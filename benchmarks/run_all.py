"""Run every benchmark script at 1 thread and at the machine's core count, several times, and
tabulate the median and range of each figure.

    .venv/bin/python benchmarks/run_all.py                      # every benchmarks/bench_*.py
    .venv/bin/python benchmarks/run_all.py bench_conv onnx      # scripts whose name contains these
    .venv/bin/python benchmarks/run_all.py --runs 3 --json out.json

Each script runs as a fresh subprocess with ``--threads 1`` and ``--threads <os.cpu_count()>``,
alternately, ``--runs`` times each (default 5).  The figures are the ``RATIO:`` and ``VALUE:``
lines the scripts print (format: see ``benchmarks/_timing.py``); every other line is the
script's own report, kept in ``--log-dir`` if given (or shown with ``-v``).  A ratio compares
flowgrad with its peer in the same process (per-round ratio medians); the table gives, per row
and thread count, the median over runs and the range [min-max].  1 thread is the primary figure:
on a shared machine it is the one neighbours' load disturbs least.

Scripts are found by glob, so new ``bench_*.py`` files join by themselves.  A script that cannot
run at some thread count says so with a top-level ``RUN_ALL_THREADS = (1,)`` (0 = all cores), and
can ask for extra arguments with ``RUN_ALL_ARGS = [...]``; both are read from its source with
``ast``, not imported.  A script whose source does not call ``set_threads`` gets no
``--threads`` argument, only the thread environment variables (OMP/OPENBLAS/MKL/NUMBA).
"""
from __future__ import annotations

import argparse
import ast
import datetime
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _timing import _THREAD_VARS, parse_lines  # noqa: E402


def script_settings(path: str, cores: int) -> tuple[list[int], list[str], bool]:
    """(thread counts, extra args, takes --threads) of one script, from its source."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    threads: list[int] = [1, cores]
    extra: list[str] = []
    try:
        tree = ast.parse(source)
    except SyntaxError:
        tree = ast.Module(body=[], type_ignores=[])
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            if name == "RUN_ALL_THREADS":
                threads = [cores if int(t) <= 0 else int(t) for t in value]
            elif name == "RUN_ALL_ARGS":
                extra = [str(a) for a in value]
    return list(dict.fromkeys(threads)), extra, "set_threads" in source


def run_script(path: str, threads: int, extra: list[str], takes_threads: bool,
               timeout: float) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for var in _THREAD_VARS:
        env[var] = str(threads)
    cmd = [sys.executable, path] + (["--threads", str(threads)] if takes_threads else []) + extra
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=os.path.dirname(HERE))
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc = "timeout"
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
    return {"cmd": cmd, "rc": rc, "seconds": time.perf_counter() - start, "stdout": out,
            "stderr": err, "records": parse_lines(out)}


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3g}"


def summarize(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def cell(s: dict | None) -> str:
    if s is None:
        return "-"
    return f"{fmt(s['median'])} [{fmt(s['min'])}-{fmt(s['max'])}] n={s['n']}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scripts", nargs="*",
                        help="run only scripts whose file name contains one of these")
    parser.add_argument("--runs", type=int, default=5, help="runs per script and thread count")
    parser.add_argument("--threads", type=int, nargs="+",
                        help="thread counts (default: 1 and os.cpu_count(); 0 = all cores)")
    parser.add_argument("--json", help="write runs and summary to this file")
    parser.add_argument("--log-dir", help="keep each run's stdout and stderr here")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    parser.add_argument("-v", "--verbose", action="store_true", help="echo each run's output")
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    paths = sorted(glob.glob(os.path.join(HERE, "bench_*.py")))
    if args.scripts:
        paths = [p for p in paths if any(s.removesuffix(".py") in os.path.basename(p)
                                         for s in args.scripts)]
    if not paths:
        print("no benchmark script matches", file=sys.stderr)
        return 2
    wanted = None if not args.threads else [cores if t <= 0 else t for t in args.threads]
    if args.log_dir:
        os.makedirs(args.log_dir, exist_ok=True)
    started = datetime.datetime.now().astimezone()
    print(f"run_all: {len(paths)} scripts x {args.runs} runs, {cores} cores, "
          f"python {platform.python_version()}, {started:%Y-%m-%d %H:%M %Z}", flush=True)

    runs: dict[str, dict[int, list[dict]]] = {}
    failures = 0
    for path in paths:
        name = os.path.basename(path).removesuffix(".py")
        threads, extra, takes = script_settings(path, cores)
        if wanted is not None:
            allowed, threads = threads, [t for t in threads if t in wanted]
            if not threads:
                print(f"  {name}: runs at {', '.join(map(str, allowed))} thread(s) only "
                      "(its RUN_ALL_THREADS): skipped", flush=True)
                continue
        if not takes:
            print(f"  {name}: does not call set_threads: thread env variables only", flush=True)
        runs[name] = {t: [] for t in threads}
        for k in range(args.runs):
            if k == 1 and all(per[0]["rc"] != 0 for per in runs[name].values()):
                print(f"  {name}: every first run failed: not repeated", flush=True)
                break
            for t in threads:
                r = run_script(path, t, extra, takes, args.timeout)
                runs[name][t].append(r)
                ok = r["rc"] == 0
                failures += not ok
                status = "ok" if ok else f"FAILED (rc {r['rc']})"
                print(f"  {name} threads={t} run {k + 1}/{args.runs}: {status}, "
                      f"{len(r['records'])} figures, {r['seconds']:.0f} s", flush=True)
                if args.log_dir:
                    base = os.path.join(args.log_dir, f"{name}.t{t}.run{k + 1}")
                    with open(base + ".out", "w") as f:
                        f.write(r["stdout"])
                    with open(base + ".err", "w") as f:
                        f.write(r["stderr"])
                if args.verbose:
                    print(r["stdout"], end="")
                if not ok:
                    tail = (r["stderr"] or r["stdout"]).strip().splitlines()[-6:]
                    print("\n".join("      " + line for line in tail), flush=True)

    # -- the table ---------------------------------------------------------------------------
    all_threads = sorted({t for per in runs.values() for t in per})
    summary = []
    print(f"\nMedian [min-max] over runs (n = runs that printed the row); "
          f"threads: {', '.join(map(str, all_threads))}")
    for name, per in runs.items():
        rows: dict[tuple, dict[int, list[float]]] = {}
        for t, results in per.items():
            for r in results:
                for rec in r["records"]:
                    key = (rec["kind"], rec["row"], rec.get("peer") or rec.get("unit"),
                           rec["target"])
                    rows.setdefault(key, {}).setdefault(t, []).append(rec["value"])
        print(f"\n{name}")
        if not rows:
            print("  (no RATIO/VALUE lines)")
            continue
        cells = []
        for key, by_threads in rows.items():
            kind, row, other, target = key
            stats = {t: summarize(v) for t, v in by_threads.items()}
            cells.append((key, stats, [row, ("x " if kind == "ratio" else "") + other,
                                       target or ""] + [cell(stats.get(t)) for t in all_threads]))
        header = ["row", "vs / unit", "target"] + [
            f"{t} thread{'s' if t > 1 else ''}: median [range]" for t in all_threads]
        widths = [max(len(c[2][i]) for c in cells + [(None, None, header)]) + 2
                  for i in range(len(header))]
        print("  " + "".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
        for (kind, row, other, target), stats, texts in cells:
            print("  " + "".join(h.ljust(w) for h, w in zip(texts, widths)).rstrip())
            summary.append({"script": name, "kind": kind, "row": row,
                            ("peer" if kind == "ratio" else "unit"): other, "target": target,
                            "threads": {str(t): s for t, s in stats.items()}})
    if args.json:
        machine = {"cpu_count": cores, "python": platform.python_version(),
                   "platform": platform.platform(), "started": started.isoformat(),
                   "load_average_at_end": os.getloadavg()}
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "summary": summary,
                       "runs": {n: {str(t): [{k: v for k, v in r.items() if k != "stdout"}
                                             for r in rs] for t, rs in per.items()}
                                for n, per in runs.items()}}, f, indent=1)
        print(f"\nwrote {args.json}")
    if failures:
        print(f"\n{failures} run(s) failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
