"""What every fuzzer shares: run the CLI on a mutant file and judge the outcome.

A *target* is one boundary (YAML files, ONNX models, data files, checkpoints...): a module of
this package defining

* ``NAME`` — the corpus folder name (``tests/fuzz/corpus/<NAME>/``);
* ``SUFFIX`` — the mutant files' suffix (``.yaml``, ``.onnx``...);
* ``seeds() -> list[bytes]`` — well-formed inputs to mutate (the repo's own graphs, the onnx
  package's test models...);
* ``mutate(data: bytes, rng: random.Random) -> bytes`` — one mutant, structure-aware where it
  helps (the byte-level :func:`byte_mutation` is the fallback);
* ``argv(path: str, workdir: str) -> list[str]`` — the ``flowgrad`` command line that reads it.

Both the suite (``tests/test_fuzz_*.py``: a fixed hypothesis budget, then every file of the
regression corpus) and the long campaign (``tools/fuzz_campaign.py``) run targets through
:func:`run_cli`, so "a crash" means the same thing in both: an exception escaping the CLI (a
traceback), exit status 3 (an internal error), or a case over the time limit.
"""
from __future__ import annotations

import contextlib
import io
import os
import random
import time
import traceback
from dataclasses import dataclass, field

#: a case slower than this is a failure (the issue's bound)
SECONDS = 10.0

#: values that break parsers and shape arithmetic, spliced in by the mutators
INTERESTING = [b"0", b"-1", b"-0", b"1e400", b"nan", b"inf", b"-inf", b"2147483648",
               b"9223372036854775808", b"18446744073709551616", b"99999999999", b"1.5",
               b"''", b"null", b"~", b"[]", b"{}", b"!!int abc", b"!!binary x", b"&a [*a]",
               b"\x00", b"\xff\xfe", b"\xc3\x28", b"\t", b"\r", b"\x1b", b"%", b"{{", b"]]",
               b"true", b"no", b"0x10", b"1_000", b"-9e-400", b"<<: *x"]


@dataclass
class Outcome:
    """How one CLI run ended: ``rc`` (None when an exception escaped), what escaped."""

    rc: int | None
    escaped: str = ""
    stderr: str = ""
    seconds: float = 0.0
    argv: list[str] = field(default_factory=list)

    @property
    def crashed(self) -> bool:
        return self.rc is None or self.rc == 3 or self.seconds > SECONDS

    def describe(self) -> str:
        why = (f"traceback: {self.escaped}" if self.rc is None else
               f"exit 3: {self.stderr.strip()[:500]}" if self.rc == 3 else
               f"took {self.seconds:.1f} s")
        return f"flowgrad {' '.join(self.argv)} -> {why}"


def run_cli(argv: list[str]) -> Outcome:
    """Run ``flowgrad ARGV`` in this process, output captured; never raises."""
    from flowgrad import cli
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    env = os.environ.pop("FLOWGRAD_DEBUG", None)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(argv)
        escaped = ""
    except SystemExit as e:
        rc, escaped = (e.code if isinstance(e.code, int) else 2), ""
    except BaseException as e:  # noqa: BLE001 - the point is to catch everything
        rc = None
        frames = traceback.extract_tb(e.__traceback__)
        where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        escaped = f"{type(e).__name__}: {str(e)[:300]}{where}"
    finally:
        if env is not None:
            os.environ["FLOWGRAD_DEBUG"] = env
    return Outcome(rc, escaped, err.getvalue(), time.perf_counter() - start, list(argv))


def byte_mutation(data: bytes, rng: random.Random, rounds: int | None = None) -> bytes:
    """A few random edits of ``data``: flip, delete, duplicate, truncate, splice an interesting
    token.  Deterministic for a given ``rng`` state."""
    buf = bytearray(data)
    for _ in range(rounds or rng.randint(1, 4)):
        if not buf:
            buf += rng.choice(INTERESTING)
            continue
        at = rng.randrange(len(buf))
        kind = rng.randrange(6)
        if kind == 0:
            buf[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del buf[at:at + rng.randint(1, 16)]
        elif kind == 2:
            end = min(len(buf), at + rng.randint(1, 64))
            buf[at:at] = buf[at:end]
        elif kind == 3:
            del buf[at:]
        else:
            buf[at:at + rng.randint(0, 4)] = rng.choice(INTERESTING)
    return bytes(buf)


def write_case(data: bytes, suffix: str, folder: str) -> str:
    """Write a mutant to ``folder`` (a fresh temporary folder per case) and return its path."""
    path = os.path.join(folder, "case" + suffix)
    with open(path, "wb") as f:
        f.write(data)
    return path


def run_target(target, data: bytes, folder: str) -> Outcome:
    """Write ``data`` as the target's file and run the target's command on it."""
    path = write_case(data, target.SUFFIX, folder)
    return run_cli(target.argv(path, folder))


def corpus(target) -> list[str]:
    """The regression corpus of ``target``: every crash ever found, one file each."""
    folder = os.path.join(os.path.dirname(__file__), "corpus", target.NAME)
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if not f.startswith("."))


def save_crash(target, data: bytes) -> str:
    """Add a crashing input to the target's corpus (named by its content's hash)."""
    import hashlib
    folder = os.path.join(os.path.dirname(__file__), "corpus", target.NAME)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, hashlib.sha1(data).hexdigest()[:16] + target.SUFFIX)
    with open(path, "wb") as f:
        f.write(data)
    return path


def seeded_rng(seed: int) -> random.Random:
    return random.Random(seed)
