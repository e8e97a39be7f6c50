"""The kernel tier as a whole: every kernel compared to its reference somewhere, compiled code
cached outside the package and reused by the next process, the numpy switch."""
from __future__ import annotations

import importlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np

import flowgrad
from flowgrad import kernels

ROOT = pathlib.Path(flowgrad.__file__).parent
TESTS = pathlib.Path(__file__).parent


def test_the_suite_runs_the_compiled_kernels():
    assert kernels.MODE == "numba", "numba is a core dependency; the suite must test it"


def test_every_kernel_is_compared_to_its_reference_by_some_test_file():
    covered: set[str] = set()
    for path in sorted(TESTS.glob("test_kernels_*.py")):
        module = importlib.import_module(f"tests.{path.stem}")
        covered |= set(module.KERNELS)
    missing = sorted(set(kernels.REGISTRY) - covered)
    assert not missing, f"kernels without a comparison test: {missing}"
    assert not covered - set(kernels.REGISTRY), "a test lists a kernel that does not exist"


_PROBE = """
import json, sys
import numpy as np
from flowgrad import kernels
x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
mean, var = np.empty(3), np.empty(3)
kernels.bn_stats(x, mean, var)
stats = kernels.bn_stats.compiled.stats if kernels.MODE == "numba" else None
import flowgrad
print(json.dumps({"mode": kernels.MODE, "mean": mean.tolist(), "file": flowgrad.__file__,
                  "hits": sum(stats.cache_hits.values()) if stats else 0,
                  "misses": sum(stats.cache_misses.values()) if stats else 0}))
"""


def _probe(env_extra: dict[str, str], cwd=None) -> dict:
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                         text=True, timeout=300, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cache_files(folder: pathlib.Path) -> list[pathlib.Path]:
    return [p for p in folder.rglob("*") if p.suffix in (".nbi", ".nbc")]


def test_compiled_kernels_are_cached_outside_the_package_and_reused(tmp_path):
    cache = tmp_path / "cache"
    before = _cache_files(ROOT)
    first = _probe({"FLOWGRAD_CACHE_DIR": str(cache)})
    assert first["mode"] == "numba" and first["mean"] == [7.5, 11.5, 15.5]
    assert first["misses"] >= 1 and _cache_files(cache), "the first process compiles and saves"
    second = _probe({"FLOWGRAD_CACHE_DIR": str(cache)})
    assert second["hits"] >= 1 and second["misses"] == 0, "the second process starts warm"
    assert _cache_files(ROOT) == before, "nothing is written into the package folder"


def test_a_copy_of_the_same_sources_elsewhere_starts_warm_and_an_edit_starts_cold(tmp_path):
    """The cache is keyed by the sources' content, not their place: a fresh clone (CI's, a
    second worktree) reuses what another checkout compiled; a changed kernel source does not."""
    cache = tmp_path / "cache"
    copies = [tmp_path / name for name in ("clone-a", "clone-b", "edited")]
    for copy in copies:
        shutil.copytree(ROOT, copy / "flowgrad",
                        ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    with open(copies[2] / "flowgrad" / "kernels" / "norm.py", "a") as f:
        f.write("\n# an edit\n")
    runs = [_probe({"FLOWGRAD_CACHE_DIR": str(cache), "PYTHONPATH": str(copy)}, cwd=copy)
            for copy in copies]
    assert [run["file"] for run in runs] == [str(c / "flowgrad" / "__init__.py") for c in copies]
    first, second, edited = runs
    assert first["misses"] >= 1 and first["hits"] == 0
    assert second["hits"] >= 1 and second["misses"] == 0, "the same sources elsewhere: warm"
    assert edited["misses"] >= 1 and edited["hits"] == 0, "an edited kernel source: cold"


def test_the_cache_is_written_and_read_under_the_folder_lock(tmp_path, monkeypatch):
    """Two processes saving two signatures of one kernel at once could otherwise file one's
    machine code under the other's signature (see _jit._LockedCache): while numba writes an
    index or reads one, no other process may take the folder's exclusive lock."""
    import fcntl

    from numba.core import caching

    from flowgrad.kernels import _jit

    seen = []

    def locked(folder) -> bool:
        with open(os.path.join(folder, ".lock"), "a+b") as other:   # a second open file
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(other, fcntl.LOCK_UN)
            return False

    for name in ("save", "load"):
        original = getattr(caching.IndexDataCacheFile, name)

        def spy(self, *args, _original=original, _name=name):
            seen.append((_name, locked(self._cache_path)))
            return _original(self, *args)
        monkeypatch.setattr(caching.IndexDataCacheFile, name, spy)
    monkeypatch.setenv("FLOWGRAD_CACHE_DIR", str(tmp_path))

    def twice(x):
        return 2 * x

    compiled = _jit.jit(twice)
    assert compiled(2.0) == 4.0 and compiled(3) == 6          # two signatures, two saves
    assert [name for name, _ in seen] == ["load", "save", "load", "save"]
    assert all(held for _, held in seen), seen
    assert not locked(compiled._cache.cache_path), "the lock is let go afterwards"


def test_kernels_run_when_no_cache_can_be_written(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = _probe({"FLOWGRAD_CACHE_DIR": str(blocker / "cache")})
    assert result["mode"] == "numba" and result["mean"] == [7.5, 11.5, 15.5]


def test_the_numpy_switch_runs_the_references():
    result = _probe({"FLOWGRAD_KERNELS": "numpy"})
    assert result["mode"] == "numpy" and result["mean"] == [7.5, 11.5, 15.5]


NET = """
flowgrad: 1
name: bn_net
inputs: {x: {shape: [3, 8, 8]}, label: {shape: [], dtype: int64}}
params:
  K: {shape: [6, 3, 3, 3], init: {kind: he_normal, seed: 1}}
  g: {shape: [6], init: {kind: constant, value: 1.0}}
  b: {shape: [6], init: {kind: zeros}}
  m: {shape: [6], init: {kind: zeros}, trainable: false}
  v: {shape: [6], init: {kind: constant, value: 1.0}, trainable: false}
  W: {shape: [96, 10], init: {kind: glorot_uniform, seed: 2}}
nodes:
  conv: {op: conv, in: {x: x, W: K}, pads: [1, 1, 1, 1]}
  bn:   {op: batch_norm, in: {x: conv, scale: g, bias: b, mean: m, var: v}}
  h:    {op: gelu, in: bn}
  pool: {op: max_pool, in: h, kernel_shape: [2, 2], strides: [2, 2]}
  flat: {op: flatten, in: pool}
  logits: {op: dense, in: {x: flat, W: W}}
  loss: {op: softmax_cross_entropy, in: {logits: logits, labels: label}}
outputs: [loss]
"""

_END_TO_END = """
import json, sys, numpy as np, flowgrad
plan = flowgrad.compile(flowgrad.load(sys.argv[1]), dtype=np.float64).train()
feeds = {"x": np.random.default_rng(0).standard_normal((4, 3, 8, 8)), "label": np.arange(4)}
out, grads = plan.forward_backward(feeds, {"loss": 1.0}, wrt=["x"])
print(json.dumps({"loss": float(out["loss"]),
                  "grads": {k: np.asarray(v).ravel().tolist() for k, v in grads.items()}}))
"""


def test_a_plan_gives_the_same_results_with_references_and_compiled_kernels(tmp_path):
    """End to end through the ops (conv, batch norm in training, gelu, pooling, softmax):
    float64, kernels on and off."""
    graph = tmp_path / "net.yaml"
    graph.write_text(NET)
    results = []
    for mode in ("numba", "numpy"):
        out = subprocess.run([sys.executable, "-c", _END_TO_END, str(graph)],
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "FLOWGRAD_KERNELS": mode})
        assert out.returncode == 0, out.stderr
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    compiled, reference = results
    assert np.isclose(compiled["loss"], reference["loss"], rtol=1e-10)
    assert set(compiled["grads"]) == {"x", "K", "g", "b", "W"}
    for name, value in reference["grads"].items():
        np.testing.assert_allclose(compiled["grads"][name], value, rtol=1e-8, atol=1e-10,
                                   err_msg=name)


# -- pooling's special paths (the geometry grid of test_kernels_conv.py misses them) ---------

import pytest  # noqa: E402

from flowgrad.kernels import pool as P  # noqa: E402


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("planes", [1, 3, 4, 9])
@pytest.mark.parametrize("sizes", [(1, 1, 7), (1, 7, 7), (2, 3, 5), (1, 1, 1)])
def test_avg_pool_over_the_whole_plane_sums_it_in_order(sizes, planes, dtype):
    """A window as large as the plane (ResNet's final pool) takes avg_pool's plane-sum loop,
    four planes at a time: the same bits as the reference (0 + the cells in memory order)."""
    rng = np.random.default_rng(planes * 10 + sizes[2])
    x = rng.standard_normal((1, planes) + sizes).astype(dtype) * 100
    args = (sizes, (1, 1, 1), (1, 1, 1), (0, 0, 0), (0, 0, 0), sizes)
    got = np.full((1, planes, 1, 1, 1), np.nan, dtype)
    want = np.full_like(got, np.nan)
    P.avg_pool.compiled(x, got, *args)
    P.avg_pool.reference(x, want, *args)
    np.testing.assert_array_equal(got, want)
    flat = x.reshape(planes, -1)
    for p in range(planes):                     # sequential float sums, as said
        s = dtype(0)
        for v in flat[p]:
            s = dtype(s + v)
        assert got.reshape(-1)[p] == dtype(s / dtype(flat.shape[1]))


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize("geometry", [
    ((112, 112), (3, 3), (2, 2), (1, 1), (1, 1)),        # ResNet's stem pool
    ((9, 10), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((8, 9), (2, 2), (2, 2), (1, 1), (1, 1)),
    ((7, 11), (3, 2), (2, 3), (1, 2), (2, 1)),           # dilated, pads on one side
    ((6, 7), (2, 3), (1, 2), (1, 1), (0, 2)),
])
def test_max_pool_with_pads_matches_the_reference(geometry, dtype):
    """Padded windows take the row loop with a padded column buffer: the same maxima and
    arg-maxima as the reference (NaN and -inf included)."""
    sizes, kernel, strides, dilations, begin = geometry
    out = tuple((n + 2 * b - (k - 1) * d - 1) // s + 1
                for n, k, s, d, b in zip(sizes, kernel, strides, dilations, begin))
    rng = np.random.default_rng(sum(sizes))
    x = rng.standard_normal((2, 3, 1) + sizes) * 4
    if dtype == np.float32:
        flat = x.reshape(-1)
        flat[::13] = -np.inf
        flat[5::17] = np.nan
    x = x.astype(dtype)
    low = -np.inf if dtype == np.float32 else np.iinfo(dtype).min
    args = ((1,) + kernel, (1,) + strides, (1,) + dilations, (0,) + begin, low)
    results = []
    for run in (P.max_pool.compiled, P.max_pool.reference):
        y = np.zeros((2, 3, 1) + out, dtype)
        arg = np.full(y.shape, -7, np.int32)
        run(x, y, arg, *args)
        y_only = np.zeros_like(y)
        run(x, y_only, np.empty((0,) * 5, np.int32), *args)
        np.testing.assert_array_equal(y_only, y)
        results.append((y, arg))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 88, 3, 96), (2, 5, 7), (3, 4, 13, 13), (1, 3, 1, 1),
                                   (2, 3, 4, 5, 6), (1, 2, 100, 100), (1, 1, 20000)])
def test_global_avg_pool_is_numpys_float_mean_bit_for_bit(shape, dtype):
    """global_avg_pool skips numpy's mean's Python layers but not its rounding: the same
    pairwise sum in x's dtype, the same rounded quotient (SqueezeNet depends on it)."""
    from flowgrad.op import Context
    from flowgrad.ops.pool import GlobalAvgPool
    rng = np.random.default_rng(len(shape) * 7 + shape[-1])
    for scale in (1e-3, 1.0, 1e4):
        x = (rng.standard_normal(shape) * scale + rng.uniform(-5, 5)).astype(dtype)
        got = GlobalAvgPool().forward(Context(grad_enabled=False), x)[0]
        want = x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=dtype)
        assert got.shape == want.shape and got.dtype == want.dtype
        assert got.tobytes() == want.tobytes()
