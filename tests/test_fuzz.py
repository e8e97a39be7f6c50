"""Fuzzing in the suite: every boundary's mutants, on a fixed budget, then the corpus of every
crash ever found.

The targets are the ``tests/fuzz/target_*.py`` modules (see ``tests/fuzz/harness.py``).  The
budget is fixed and derandomized, so the suite is repeatable and bounded (about half a minute
together); ``tools/fuzz_campaign.py`` runs the same targets for as long as you like.  A crash
is a traceback, exit status 3 or a case over 10 s.
"""
from __future__ import annotations

import importlib
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.fuzz import harness

FUZZ = pathlib.Path(__file__).resolve().parent / "fuzz"
TARGETS = {m.NAME: m for m in (importlib.import_module(f"tests.fuzz.{p.stem}")
                               for p in sorted(FUZZ.glob("target_*.py")))}

#: mutants per target on every run of the suite
BUDGET = {"yaml": 60, "onnx": 60, "external_data": 30, "data_file": 30, "checkpoint": 20}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_mutants_end_in_a_message_not_a_crash(name, tmp_path_factory):
    target = TARGETS[name]
    seeds = target.seeds()

    @settings(max_examples=BUDGET.get(name, 40), deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(seed=st.integers(0, len(seeds) - 1), rng=st.randoms(use_true_random=False))
    def run(seed, rng):
        mutant = target.mutate(seeds[seed], rng)
        outcome = harness.run_target(target, mutant, str(tmp_path_factory.mktemp(name)))
        assert not outcome.crashed, outcome.describe()

    run()


CORPUS = [(name, path) for name, target in sorted(TARGETS.items())
          for path in harness.corpus(target)]


@pytest.mark.parametrize("name,path", CORPUS, ids=[pathlib.Path(p).name for _, p in CORPUS])
def test_every_crash_ever_found_stays_fixed(name, path, tmp_path):
    data = pathlib.Path(path).read_bytes()
    outcome = harness.run_target(TARGETS[name], data, str(tmp_path))
    assert not outcome.crashed, outcome.describe()
