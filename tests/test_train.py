"""The trainer: data, the YAML train section, metrics, early stopping, modes, numerics, targets."""
from __future__ import annotations

import numpy as np
import pytest

import flowgrad
from flowgrad.data import batches, fit_to_input, load_data, split
from flowgrad.errors import FlowgradError, GraphError, NumericsError
from flowgrad.op import Op, Spec
from flowgrad.train import Trainer

SMALL = """
flowgrad: 1
name: small
inputs: {x: {shape: [64]}, label: {shape: [], dtype: int64}}
params:
  W1: {shape: [64, 16], init: {kind: he_normal}}
  b1: {shape: [16], init: {kind: zeros}}
  W2: {shape: [16, 10], init: {kind: glorot_uniform}}
  b2: {shape: [10], init: {kind: zeros}}
nodes:
  fc1: {op: dense, in: {x: x, W: W1, b: b1}}
  h1: {op: HIDDEN, in: fc1}
  logits: {op: dense, in: {x: h1, W: W2, b: b2}}
  loss: {op: softmax_cross_entropy, in: {logits: logits, labels: label}}
outputs: [logits, loss]
train:
TRAIN
"""


def load_small(tmp_path, train="  optimizer: {kind: adam, lr: 0.01}", hidden="relu",
               registry=None):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL.replace("TRAIN", train).replace("HIDDEN", hidden))
    return flowgrad.load(str(path), registry=registry)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def test_digits_are_embedded(digits):
    assert digits.x.shape == (1797, 64) and digits.x.dtype == np.float32
    assert digits.x.min() == 0.0 and digits.x.max() == 1.0
    assert np.bincount(digits.y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_split_is_fixed_and_disjoint(digits):
    a_train, a_test = split(digits, 0.2, seed=0)
    b_train, b_test = split(digits, 0.2, seed=0)
    assert len(a_test) == 359 and len(a_train) == 1438
    assert np.array_equal(a_test.x, b_test.x)
    _, other = split(digits, 0.2, seed=1)
    assert not np.array_equal(a_test.y, other.y)


def test_user_data_formats(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    y = np.array([0, 1, 1, 0])
    np.savez(tmp_path / "d.npz", features=x, labels=y)
    np.save(tmp_path / "d.npy", np.column_stack([x, y]))
    (tmp_path / "d.csv").write_text("a,b,c,label\n" + "\n".join(
        ",".join(map(str, [*row, lab])) for row, lab in zip(x.tolist(), y)))
    for name in ("d.npz", "d.npy", "d.csv"):
        data = load_data(str(tmp_path / name))
        np.testing.assert_array_equal(data.x, x)
        np.testing.assert_array_equal(data.y, y)
        assert data.y.dtype.kind == "i"
    with pytest.raises(FlowgradError, match="not found"):
        load_data(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "bad.npz", a=x, b=y, c=y)
    unnamed = load_data(str(tmp_path / "bad.npz"))     # the graph's input names may pick them
    trainer = Trainer(flowgrad.compile(load_small(tmp_path)))
    with pytest.raises(FlowgradError, match=r"bad.npz: input 'x' takes the features, but the "
                                            r"data has no array named 'x'.*arrays in the file: "
                                            r"a, b, c"):
        trainer.fit(unnamed)


def test_batches_and_reshaping():
    order = np.concatenate(list(batches(10, 4, np.random.default_rng(0))))
    assert sorted(order) == list(range(10))
    assert [len(b) for b in batches(10, 4, None)] == [4, 4, 2]
    x = np.zeros((5, 64))
    assert fit_to_input(x, Spec((None, 1, 8, 8), np.float32), "x").shape == (5, 1, 8, 8)
    with pytest.raises(FlowgradError, match="takes"):
        fit_to_input(x, Spec((None, 3, 8, 8), np.float32), "x")


def test_training_learns_and_reports_history(tmp_path, digits):
    graph = load_small(tmp_path, "  optimizer: {kind: adam, lr: 0.01}\n  epochs: 3\n"
                                 "  validation_split: 0.2\n  batch_size: 64")
    trainer = Trainer(flowgrad.compile(graph))
    history = trainer.fit(digits)
    assert len(history) == 3
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_accuracy"][-1] > 0.85
    assert set(history.rows[0]) >= {"epoch", "loss", "accuracy", "val_loss", "val_accuracy",
                                    "lr", "seconds"}
    assert trainer.predict(digits.x[:5]).shape == (5, 10)


def test_train_section_errors_are_located(tmp_path):
    with pytest.raises(GraphError) as e:        # the section is read when the file loads
        load_small(tmp_path, "  optimiser: {kind: adam}\n  epochs: 0\n"
                             "  optimizer: {kind: adam, lr: 0.1, momentum: 0.9}\n"
                             "  schedule: {kind: cosin}\n  metrics: [acuracy]")
    report = str(e.value)
    for expected in ("unknown key 'optimiser' in 'train'; did you mean 'optimizer'?",
                     "'epochs' must be an integer >= 1", "optimizer 'adam' has no setting "
                     "'momentum'", "unknown schedule 'cosin'; did you mean 'cosine'?",
                     "unknown metric 'acuracy'"):
        assert expected in report
    assert "small.yaml:20:" in report and "5 errors" in report


def test_train_section_names_are_checked_against_the_graph(tmp_path):
    with pytest.raises(GraphError, match="did you mean 'loss'"):
        load_small(tmp_path, "  minimize: {los: 1.0}")


def test_output_metrics_and_weighted_losses(tmp_path, digits):
    graph = load_small(tmp_path, "  minimize: {loss: 2.0}\n  metrics: [accuracy, fc1]\n"
                                 "  epochs: 1")
    plan = flowgrad.compile(graph)
    trainer = Trainer(plan)
    trainer.fit(digits.subset(np.arange(256)))
    data = digits.subset(np.arange(64))
    metrics = trainer.evaluate(data)
    assert set(metrics) == {"loss", "accuracy", "fc1"}
    out = plan.eval().forward(trainer.feeds(data, slice(None)), outputs=["loss", "fc1"],
                              grad=False)
    assert metrics["loss"] == pytest.approx(2.0 * float(out["loss"]), rel=1e-5)
    assert metrics["fc1"] == pytest.approx(float(out["fc1"].mean()), rel=1e-5)


def test_loss_is_not_a_metric_name(tmp_path):
    with pytest.raises(GraphError, match="always reported"):
        load_small(tmp_path, "  metrics: [accuracy, loss]")


def test_early_stopping_stops_and_restores_best(tmp_path, digits):
    graph = load_small(tmp_path, "  optimizer: {kind: sgd, lr: 5.0}\n  epochs: 30\n"
                                 "  validation_split: 0.25\n"
                                 "  early_stopping: {monitor: val_loss, patience: 2}")
    plan = flowgrad.compile(graph)
    trainer = Trainer(plan)
    history = trainer.fit(digits.subset(np.arange(400)))
    assert trainer.stopped and len(history) < 30
    best = min(history["val_loss"])
    assert history["val_loss"][-1] > best
    _, val = split(digits.subset(np.arange(400)), 0.25, seed=0)
    assert trainer.evaluate(val)["loss"] == pytest.approx(best, rel=1e-5)


class ModeSpy(Op):
    """Identity that records the mode it ran in (a plugin op, as dropout/batch norm are)."""

    type = "mode_spy"
    seen: list = []

    def infer(self, x):
        return (x,)

    def forward(self, ctx, x):
        ModeSpy.seen.append(ctx.training)
        return (x,)

    def backward(self, ctx, gy):
        return (gy,)


class SpyPlugin:
    @flowgrad.hookimpl
    def flowgrad_register_ops(self, ops):
        ops.add(ModeSpy)


def test_train_mode_while_fitting_eval_mode_for_metrics(tmp_path, digits):
    registry = flowgrad.make_registry(plugins=[SpyPlugin()], autoload=False)
    graph = load_small(tmp_path, "  epochs: 1\n  batch_size: 100\n  validation_split: 0.5",
                       hidden="mode_spy", registry=registry)
    ModeSpy.seen = []
    Trainer(flowgrad.compile(graph), registry=registry).fit(digits.subset(np.arange(400)))
    assert ModeSpy.seen[:2] == [True, True] and ModeSpy.seen[-1] is False
    assert ModeSpy.seen == [True, True, False]      # 2 training batches, 1 validation batch


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nonfinite_loss_names_the_first_bad_node(tmp_path, digits):
    graph = load_small(tmp_path, "  epochs: 1", hidden="log")
    with pytest.raises(NumericsError) as e:
        Trainer(flowgrad.compile(graph)).fit(digits.subset(np.arange(64)))
    assert "node 'h1' (log) is the first to produce NaN or infinity" in str(e.value)
    assert "epoch 1, step 1" in str(e.value)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_is_reported_with_the_param(tmp_path, digits):
    graph = load_small(tmp_path, "  optimizer: {kind: sgd, lr: 1.0e+30}\n  epochs: 5")
    with pytest.raises(NumericsError, match=r"(?s)node .logits. \(dense\).*lower the learning rate"):
        Trainer(flowgrad.compile(graph)).fit(digits.subset(np.arange(128)))


@pytest.mark.parametrize("name,target", [("digits_mlp", 0.97), ("digits_cnn", 0.98)])
def test_digits_networks_reach_their_targets(graphs_dir, digits, name, target):
    """The README's claims: test accuracy on the fixed 80/20 split (seed 0)."""
    graph = flowgrad.load(str(graphs_dir / f"{name}.yaml"))
    trainer = Trainer(flowgrad.compile(graph))
    train, test = split(digits, trainer.config.test_split, seed=0)
    trainer.fit(train)
    assert trainer.evaluate(test)["accuracy"] >= target


def test_micro_batches_accumulate_the_full_batch_gradient(tmp_path):
    from flowgrad.train import forward_backward
    net = flowgrad.compile(load_small(tmp_path), dtype="float64")
    rng = np.random.default_rng(0)
    f = {"x": rng.standard_normal((10, 64)), "label": rng.integers(0, 10, size=10)}
    full_out, full = net.forward_backward(f, {"loss": 1.0}, wrt=["x"])
    out, chunked = forward_backward(net, f, {"loss": 1.0}, wrt=["x"], micro_batch=3)
    assert out["loss"] == pytest.approx(full_out["loss"], rel=1e-12)
    assert np.allclose(out["logits"], full_out["logits"])
    assert set(chunked) == set(full)
    for k in full:
        assert np.allclose(chunked[k], full[k], rtol=1e-10, atol=1e-12), k
    with pytest.raises(FlowgradError, match="reduction"):
        forward_backward(net, f, {"loss": 1.0}, micro_batch=3, reduction="max")


def test_a_micro_batched_trainer_takes_the_same_steps(tmp_path, digits):
    data = split(digits, 0.9, seed=0)[0]
    plans = [flowgrad.compile(load_small(tmp_path), dtype="float64"),
             flowgrad.compile(load_small(tmp_path, "  optimizer: {kind: adam, lr: 0.01}\n"
                                                   "  micro_batch: 8"), dtype="float64")]
    Trainer(plans[0]).fit(data, epochs=1)
    chunked = Trainer(plans[1])                          # micro_batch from the train: section
    assert chunked.micro_batch == 8
    chunked.fit(data, epochs=1)
    for name, value in plans[0].params.items():
        np.testing.assert_allclose(plans[1].params[name], value, rtol=1e-9, atol=1e-12)


# -- data files: labels checked, regression targets, several named inputs ------------------

REGRESSION = """
flowgrad: 1
name: regression
inputs: {x: {shape: [3]}, t: {shape: [1]}}
params:
  W: {shape: [3, 1], init: {kind: zeros}}
  b: {shape: [1], init: {kind: zeros}}
nodes:
  y: {op: dense, in: {x: x, W: W, b: b}}
  loss: {op: mse, in: {y: y, target: t}}
outputs: [y, loss]
train:
  inputs: {features: x, labels: t}
  optimizer: {kind: sgd, lr: 0.1, momentum: 0.9}
  metrics: []
  epochs: 40
  batch_size: 16
"""

TWO_INPUTS = """
flowgrad: 1
name: two_inputs
inputs: {a: {shape: [3]}, b: {shape: [2]}, label: {shape: [], dtype: int64}}
params:
  W: {shape: [5, 2], init: {kind: glorot_uniform}}
  c: {shape: [2], init: {kind: zeros}}
nodes:
  ab: {op: concat, in: [a, b], axis: 1}
  logits: {op: dense, in: {x: ab, W: W, b: c}}
  loss: {op: softmax_cross_entropy, in: {logits: logits, labels: label}}
outputs: [logits, loss]
train:
  inputs: {features: a, labels: label}
  optimizer: {kind: adam, lr: 0.05}
  epochs: 30
  batch_size: 16
"""


def regression_data(n=96):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, x @ np.array([1.5, -2.0, 0.5], np.float32) + 0.25


def graph_file(tmp_path, text, name="g.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_regression_targets_train_from_npz_and_csv(tmp_path):
    x, t = regression_data()
    np.savez(tmp_path / "named.npz", x=x, t=t)                   # arrays named after inputs
    np.savez(tmp_path / "keys.npz", features=x, targets=t)        # the usual keys
    (tmp_path / "table.csv").write_text("a,b,c,t\n" + "\n".join(
        ",".join(f"{v!r}" for v in (*row, target)) for row, target in zip(x.tolist(),
                                                                           t.tolist())))
    for name in ("named.npz", "keys.npz", "table.csv"):
        data = load_data(str(tmp_path / name))
        assert (data.y if data.y is not None else data.arrays["t"]).dtype.kind == "f", name
        trainer = Trainer(flowgrad.compile(flowgrad.load(graph_file(tmp_path, REGRESSION))))
        history = trainer.fit(data)
        assert history["loss"][-1] < 1e-3, name
        np.testing.assert_allclose(trainer.plan.params["W"].ravel(), [1.5, -2.0, 0.5],
                                   atol=0.02)
    t[5] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, t=t)
    with pytest.raises(FlowgradError, match=r"nan.npz: array 't': the targets hold NaN or "
                                            r"infinity \(first at sample 5\)"):
        trainer.fit(load_data(str(tmp_path / "nan.npz")))


def test_several_inputs_take_the_arrays_named_after_them(tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(120, 3)), rng.normal(size=(120, 2))
    label = (a[:, 0] + b[:, 1] > 0).astype(np.int64)
    np.savez(tmp_path / "ab.npz", a=a, b=b, label=label)
    graph = flowgrad.load(graph_file(tmp_path, TWO_INPUTS))
    trainer = Trainer(flowgrad.compile(graph))
    trainer.fit(load_data(str(tmp_path / "ab.npz")))
    assert trainer.evaluate(load_data(str(tmp_path / "ab.npz")))["accuracy"] > 0.9
    np.savez(tmp_path / "no_b.npz", a=a, label=label)
    with pytest.raises(FlowgradError, match=r"no_b.npz: input 'b' needs an array named 'b' "
                                            r"\(arrays in the file: a, label\)"):
        Trainer(flowgrad.compile(graph)).fit(load_data(str(tmp_path / "no_b.npz")))
    np.savez(tmp_path / "short.npz", a=a, b=b[:100], label=label)
    with pytest.raises(FlowgradError, match=r"short.npz: array 'b': has 100 samples but "
                                            r"array 'a' has 120"):
        load_data(str(tmp_path / "short.npz"))


@pytest.mark.parametrize("value,message", [
    (-1, r"holds -1 at sample 3, but the classes are 0..9 \(a negative label would pick a "
         r"class from the end\)"),
    (10, r"holds 10 at sample 3, but the classes are 0..9"),
    (0.5, r"holds 0.5 at sample 3, but the input takes whole numbers"),
])
def test_labels_outside_the_classes_are_refused_not_trained(tmp_path, digits, value, message):
    y = digits.y[:64].astype(np.float64)
    y[3] = value
    np.savez(tmp_path / "d.npz", x=digits.x[:64], y=y)
    trainer = Trainer(flowgrad.compile(load_small(tmp_path)))
    before = trainer.plan.state_dict()
    with pytest.raises(FlowgradError, match=r"d.npz: array 'y': " + message):
        trainer.fit(load_data(str(tmp_path / "d.npz")))
    assert all(np.array_equal(v, trainer.plan.params[k]) for k, v in before.items())
    np.save(tmp_path / "t.npy", np.column_stack([digits.x[:64], y]))
    with pytest.raises(FlowgradError, match=r"t.npy: the label column: " + message):
        trainer.fit(load_data(str(tmp_path / "t.npy")))


def test_nan_labels_and_labels_of_the_wrong_rank_are_refused_at_load(tmp_path, digits):
    y = digits.y[:64].astype(np.float64)
    y[7] = np.nan
    np.savez(tmp_path / "d.npz", x=digits.x[:64], labels=y)
    with pytest.raises(FlowgradError, match=r"d.npz: array 'labels': the labels hold NaN or "
                                            r"infinity \(first at sample 7\)"):
        load_data(str(tmp_path / "d.npz"))
    np.savez(tmp_path / "d.npz", x=digits.x[:64], labels=np.zeros((64, 2, 2)))
    with pytest.raises(FlowgradError, match=r"'labels': the labels must have 1 or 2 axes"):
        load_data(str(tmp_path / "d.npz"))


def test_no_samples_is_an_error_not_an_empty_run(tmp_path):
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 64), np.float32), y=np.zeros(0, np.int64))
    with pytest.raises(FlowgradError, match=r"empty.npz: no samples left to train on"):
        Trainer(flowgrad.compile(load_small(tmp_path))).fit(load_data(str(tmp_path /
                                                                          "empty.npz")))
