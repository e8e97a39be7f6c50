"""lstm, gru and rnn beyond the finite-difference cases (tests/cases/recurrent.py):

* the forward agrees with onnxruntime on what the ONNX node tests leave out: sequence lengths
  in every direction, clip, input_forget, peepholes, linear_before_reset and the alternative
  activations with their alpha/beta (consumed in order by the activations that take them);
* PyTorch parity: an LSTM and a GRU language model (embedding -> 2-layer LSTM/GRU -> linear),
  exported with ``torch.onnx.export(dynamo=False)`` and imported: the logits and every
  gradient (each weight, and the input embeddings) match PyTorch autograd in float32 (the
  models and PyTorch's numbers are fixtures in tests/data/recurrent, made by its script, so
  CI checks them without torch), and
  flowgrad's own export of the imported graph runs in onnxruntime with the same logits;
* an lstm written in YAML trains (the loss falls on a tiny sequence task).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from onnx import TensorProto, helper

import flowgrad
from flowgrad.data import Dataset
from flowgrad.onnx.export import export_onnx
from flowgrad.op import Context
from flowgrad.ops.recurrent import GRU, LSTM, RNN
from flowgrad.train import Trainer

ort = pytest.importorskip("onnxruntime")

T, N, I, H = 4, 3, 3, 5
LENS = np.array([4, 2, 3], dtype=np.int32)
NAMES = ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P")
OPS = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN}

ORT_CASES = [
    ("RNN", {"direction": "reverse"}, True, False),
    ("RNN", {"activations": ["Relu"], "clip": 0.8}, False, False),
    ("RNN", {"direction": "bidirectional", "activations": ["Tanh", "LeakyRelu"],
             "activation_alpha": [0.3]}, True, False),
    ("RNN", {"activations": ["ScaledTanh"], "activation_alpha": [0.5],
             "activation_beta": [0.3]}, False, False),
    ("GRU", {"direction": "bidirectional"}, True, False),
    ("GRU", {"linear_before_reset": 1, "clip": 0.7, "direction": "reverse"}, True, False),
    ("GRU", {"activations": ["HardSigmoid", "Affine"], "activation_alpha": [0.3, 0.6],
             "activation_beta": [0.4, 0.1]}, False, False),
    ("LSTM", {"direction": "bidirectional"}, True, True),
    ("LSTM", {"clip": 0.7, "direction": "reverse"}, True, True),
    ("LSTM", {"input_forget": 1}, True, True),
    ("LSTM", {"activations": ["Sigmoid", "Elu", "ScaledTanh"],
              "activation_alpha": [0.8, 1.2], "activation_beta": [0.6]}, False, False),
    ("LSTM", {"activations": ["Sigmoid", "Softsign", "ThresholdedRelu"],
              "activation_alpha": [0.2]}, False, True),
    ("RNN", {"activations": ["Softplus"]}, True, False),
]


def _node_inputs(cls, direction, lens, peepholes, rng):
    D, G = (2 if direction == "bidirectional" else 1), cls.gates
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    ins = [f32(T, N, I), f32(D, G * H, I), f32(D, G * H, H) * 0.6, f32(D, 2 * G * H),
           LENS if lens else None, f32(D, N, H)]
    if cls is LSTM:
        ins += [f32(D, N, H), f32(D, 3 * H) if peepholes else None]
    return ins


@pytest.mark.parametrize("grad", [False, True], ids=["eval-kernels", "numpy-engine"])
@pytest.mark.parametrize("onnx_type,attrs,lens,peepholes", ORT_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(ORT_CASES)])
def test_forward_matches_onnxruntime(onnx_type, attrs, lens, peepholes, grad):
    """Both forwards: without gradient the step kernels (flowgrad.kernels.recurrent), with
    gradient the numpy engine that tapes what backward needs."""
    cls = OPS[onnx_type]
    ins = _node_inputs(cls, attrs.get("direction"), lens, peepholes, np.random.default_rng(0))
    names = NAMES[:len(ins)]
    node = helper.make_node(onnx_type, [n if v is not None else "" for n, v in zip(names, ins)],
                            list(cls.outputs), hidden_size=H, **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, TensorProto.INT32 if v.dtype == np.int32
                                       else TensorProto.FLOAT, v.shape)
         for n, v in zip(names, ins) if v is not None],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in cls.outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    expected = session.run(None, {n: v for n, v in zip(names, ins) if v is not None})
    op = cls(**{k: bool(v) if k in ("input_forget", "linear_before_reset") else v
                for k, v in attrs.items()})
    got = op.forward(Context(grad_enabled=grad), *ins)
    for out, ref in zip(got, expected):
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_padded_steps_are_zero_and_keep_the_state():
    """Y is zero past an example's length; Y_h is its state after its last real step, and
    the reverse direction starts at that step (as if the example were cut to its length)."""
    rng = np.random.default_rng(1)
    X, W, R, B, _, h0, c0, _ = _node_inputs(LSTM, "bidirectional", True, False, rng)
    op = LSTM(direction="bidirectional")
    Y, Y_h, Y_c = op.forward(Context(grad_enabled=False), X, W, R, B, LENS, h0, c0)
    for n, length in enumerate(LENS):
        alone = op.forward(Context(grad_enabled=False), X[:length, n:n + 1], W, R, B, None,
                           h0[:, n:n + 1], c0[:, n:n + 1])
        np.testing.assert_allclose(Y[:length, :, n:n + 1], alone[0], atol=1e-6)
        np.testing.assert_allclose(Y_h[:, n:n + 1], alone[1], atol=1e-6)
        np.testing.assert_allclose(Y_c[:, n:n + 1], alone[2], atol=1e-6)
        assert not Y[length:, :, n].any()


# -- PyTorch parity ---------------------------------------------------------------------------

FIXTURES = os.path.join(os.path.dirname(__file__), "data", "recurrent")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_language_model_matches_pytorch(cell):
    """The models and PyTorch's numbers come from tests/data/recurrent/make_fixtures.py (a
    bidirectional 2-layer LSTM and a 2-layer GRU, exported with constant folding off), so
    the comparison runs without torch installed."""
    path = os.path.join(FIXTURES, f"lm_{cell}.onnx")
    with np.load(os.path.join(FIXTURES, f"lm_{cell}.npz")) as saved:
        torch_run = dict(saved)
    feeds = {k.split(":", 1)[1]: v for k, v in torch_run.items() if k.startswith("input:")}
    graph = flowgrad.load(path)
    assert {cell} <= {graph.op_of(n).type for n in graph.ops}
    net = flowgrad.compile(graph)

    evaluated = net.forward(feeds, grad=False)      # the step kernels
    np.testing.assert_allclose(evaluated[graph.outputs[0]], torch_run["logits"], rtol=1e-4,
                               atol=1e-5)
    got = net.forward(feeds)
    np.testing.assert_allclose(got[graph.outputs[0]], torch_run["logits"], rtol=1e-4,
                               atol=1e-5)
    grads = net.backward({graph.outputs[0]: torch_run["seed"]}, wrt=["offset"])
    # and back out: flowgrad's export of the imported graph runs in onnxruntime
    session = ort.InferenceSession(export_onnx(graph).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    again = session.run(None, feeds)
    np.testing.assert_allclose(again[0], torch_run["logits"], rtol=1e-4, atol=1e-5)
    expected = {k.split(":", 1)[1]: v for k, v in torch_run.items()   # PyTorch's own names
                if k.startswith("grad:")}
    assert len(expected) > 10
    assert set(expected) <= set(grads), sorted(set(expected) - set(grads))
    for name, ref in expected.items():
        assert grads[name].dtype == np.float32
        np.testing.assert_allclose(grads[name], ref, rtol=1e-4, atol=1e-5, err_msg=name)


# -- training from YAML -----------------------------------------------------------------------

SEQUENCE_TASK = """
flowgrad: 1
name: lstm_sign
seed: 0
inputs: {x: {shape: [6, 2]}, label: {shape: [], dtype: int64}}     # (steps, features)
params:
  W:  {shape: [1, 32, 2], init: {kind: glorot_uniform}}              # 4 gates x 8 units
  R:  {shape: [1, 32, 8], init: {kind: glorot_uniform}}
  B:  {shape: [1, 64], init: {kind: zeros}}
  Wo: {shape: [8, 2], init: {kind: glorot_uniform}}
  bo: {shape: [2], init: {kind: zeros}}
nodes:
  rnn:    {op: lstm, in: {X: x, W: W, R: R, B: B}, layout: 1, hidden_size: 8}
  last:   {op: reshape, in: rnn.1, shape: [-1, 8]}                    # Y_h: (N, 1, 8)
  logits: {op: dense, in: {x: last, W: Wo, b: bo}}
  loss:   {op: softmax_cross_entropy, in: {logits: logits, labels: label}}
outputs: [logits, loss]
train:
  optimizer: {kind: adam, lr: 0.03}
  epochs: 8
  batch_size: 32
"""


def test_lstm_from_yaml_trains(tmp_path):
    """Does the first feature's sum over the sequence exceed the second's?  Needs memory."""
    path = tmp_path / "lstm.yaml"
    path.write_text(SEQUENCE_TASK)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 6, 2)).astype(np.float32)
    y = (x[:, :, 0].sum(axis=1) > x[:, :, 1].sum(axis=1)).astype(np.int64)
    trainer = Trainer(flowgrad.compile(flowgrad.load(str(path))))
    data = Dataset(x, y, name="sign")
    before = trainer.evaluate(data)["loss"]
    trainer.fit(data)
    after = trainer.evaluate(data)
    assert after["loss"] < 0.5 * before, (before, after)


STATE_TASK = """
flowgrad: 1
name: gru_state
inputs: {x: {shape: [6, 2]}}                                        # (steps, features)
params:
  W:  {shape: [1, 24, 2], init: {kind: glorot_uniform}}
  R:  {shape: [1, 24, 8], init: {kind: glorot_uniform}}
  h0: {shape: [STATE], init: {kind: zeros}}
nodes:
  rnn: {op: gru, in: {X: x, W: W, R: R, initial_h: h0}, layout: 1, hidden_size: 8}
outputs: [rnn]
"""


def test_a_wrong_initial_state_is_a_located_error(tmp_path):
    """A state of the wrong shape is refused where it is written; one of a fixed batch fed a
    larger batch (onnxruntime refuses it too) names the node and what to give at run time."""
    path = tmp_path / "bad.yaml"
    path.write_text(STATE_TASK.replace("STATE", "1, 2, 8"))           # layout 1: (N, D, H)
    with pytest.raises(flowgrad.FlowgradError, match=r"'initial_h' must have shape \(N, 1, 8\) "
                                                     r"\(batch, directions, hidden\), got "
                                                     r"\(1, 2, 8\)") as e:
        flowgrad.load(str(path))
    assert f"{path}:10:" in str(e.value)
    path.write_text(STATE_TASK.replace("STATE", "1, 1, 8"))
    plan = flowgrad.compile(flowgrad.load(str(path)))
    x = np.zeros((1, 6, 2), np.float32)
    for grad in (False, True):
        assert plan.forward({"x": x}, grad=grad)["rnn"].shape == (1, 6, 1, 8)
        with pytest.raises(flowgrad.FlowgradError, match="'rnn'.*'initial_h' holds a batch of "
                                                         "1 but X has 3"):
            plan.forward({"x": np.zeros((3, 6, 2), np.float32)}, grad=grad)
