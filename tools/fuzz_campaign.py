"""A long fuzz campaign: thousands of mutants per boundary, each run through the CLI.

    python tools/fuzz_campaign.py                          # every target, the issue's counts
    python tools/fuzz_campaign.py --target yaml --count 20000 --jobs 2 --save
    python tools/fuzz_campaign.py --minutes 60             # as many as fit in an hour

Each target is a module of ``tests/fuzz`` (see ``tests/fuzz/harness.py``).  Cases run in a pool
of worker processes, each limited to 2 GiB of address space and 10 s per case, so a case that
allocates wildly or hangs is caught and counted, not fatal.  A case that ends in a traceback,
exit status 3, a memory error or over 10 s is a crash; ``--save`` adds it to the regression
corpus (``tests/fuzz/corpus/<target>/``), which the suite replays on every run.  The summary
gives the counts per target and per exit status, and one line per distinct crash (the exception
and where it was raised) with the number of its first case: case ``i`` of target ``t`` is the
mutant that ``random.Random(f"{seed}/{t}/{i}")`` draws, so it can be rebuilt and replayed.
"""
from __future__ import annotations

import argparse
import collections
import importlib
import multiprocessing
import os
import pathlib
import random
import resource
import signal
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fuzz import harness  # noqa: E402

#: the issue's campaign: at least this many mutants per target
COUNTS = {"yaml": 5000, "onnx": 5000, "external_data": 2000, "data_file": 500,
          "checkpoint": 200}
MEMORY = 2 << 30


def targets() -> dict[str, object]:
    found = {}
    for path in sorted((ROOT / "tests" / "fuzz").glob("target_*.py")):
        module = importlib.import_module(f"tests.fuzz.{path.stem}")
        found[module.NAME] = module
    return found


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _case(task: tuple[str, int, int]):
    """Run mutant ``index`` of ``target`` (seeded by ``seed``); returns a summary tuple."""
    name, seed, index = task
    target = targets()[name] if name not in _case.cache else _case.cache[name]
    _case.cache[name] = target
    rng = random.Random(f"{seed}/{name}/{index}")
    seeds = target.seeds()
    data = target.mutate(rng.choice(seeds), rng)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(harness.SECONDS) + 5)
    with tempfile.TemporaryDirectory() as folder:
        try:
            outcome = harness.run_target(target, data, folder)
        except _Timeout:
            outcome = harness.Outcome(None, "timeout", seconds=harness.SECONDS + 5)
        finally:
            signal.alarm(0)
    why = _signature(outcome, folder) if outcome.crashed else ""
    return name, index, outcome.rc, outcome.crashed, why, data if outcome.crashed else b""


def _signature(outcome: harness.Outcome, folder: str) -> str:
    """What identifies a crash across cases: the exception and where it was raised (the
    internal-error paragraph's second line), without the case's temporary folder."""
    if outcome.rc == 3:
        lines = outcome.stderr.strip().splitlines()
        why = f"exit 3: {lines[1].strip() if len(lines) > 1 else outcome.stderr.strip()}"
    else:
        why = outcome.describe().split(" -> ", 1)[-1]
    if outcome.rc not in (None, 3):
        why = f"over {harness.SECONDS:.0f} s"
    return why.replace(folder, "CASE")


_case.cache = {}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", help="a target name (repeatable)")
    parser.add_argument("--count", type=int, help="mutants per target (default: the issue's)")
    parser.add_argument("--minutes", type=float, help="stop after this long")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", action="store_true", help="add crashes to the corpus")
    args = parser.parse_args(argv)
    found = targets()
    names = args.target or list(found)
    unknown = [n for n in names if n not in found]
    if unknown:
        parser.error(f"unknown target {unknown} (targets: {', '.join(found)})")
    tasks = [(n, args.seed, i) for n in names for i in range(args.count or COUNTS.get(n, 1000))]
    deadline = time.monotonic() + 60 * args.minutes if args.minutes else None
    rcs: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    crashes: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    start = time.monotonic()
    with multiprocessing.get_context("fork").Pool(args.jobs, initializer=_limit,
                                                  maxtasksperchild=200) as pool:
        for name, index, rc, crashed, why, data in pool.imap_unordered(_case, tasks,
                                                                      chunksize=4):
            rcs[name]["crash" if crashed else rc] += 1
            if crashed:
                crashes[name].append((why, index))
                if args.save:
                    harness.save_crash(found[name], data)
            if deadline and time.monotonic() > deadline:
                pool.terminate()
                break
    print(f"fuzz campaign: {time.monotonic() - start:.0f} s, seed {args.seed}")
    total_crashes = 0
    for name in names:
        counts = rcs[name]
        print(f"  {name}: {sum(counts.values())} mutants; exit status "
              + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=str)))
        distinct = collections.Counter(why for why, _ in crashes[name])
        first = {}
        for why, index in sorted(crashes[name], key=lambda c: c[1], reverse=True):
            first[why] = index
        for why, n in distinct.most_common(30):
            print(f"    {n}x (first: case {first[why]}) {why[:300]}")
        total_crashes += len(crashes[name])
    return 1 if total_crashes else 0


if __name__ == "__main__":
    sys.exit(main())
