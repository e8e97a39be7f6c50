"""The recurrent step kernels (flowgrad.kernels.recurrent) against their numpy references, and
the evaluation forward they serve against the numpy engine that training runs.

* kernel by kernel: compiled vs reference over hidden sizes, batch sizes, dtypes, every
  activation (with alpha/beta), clip, dead rows (``sequence_lens``), lstm peepholes and
  ``input_forget``;
* op by op: ``forward`` without gradient (the kernels) vs with gradient (the numpy engine) for
  rnn, gru (both ``linear_before_reset``), lstm over directions, layouts, sequence lengths,
  with and without initial states and ``sequence_lens``, float32 and float64: the kernels
  round once where numpy rounds after every operation, so float32 agrees to float32 rounding
  (bounded below), float64 to 1e-12;
* the evaluation forward is deterministic (same bits run after run).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from flowgrad.backend import DEFAULT, CPUBackend
from flowgrad.kernels import recurrent as K
from flowgrad.op import Context
from flowgrad.ops.recurrent import GRU, LSTM, RNN

KERNELS = ["rnn_step", "gru_step", "gru_step_general", "gru_gates", "gru_candidate",
           "lstm_step", "lstm_step_general"]

ALL_ACTS = list(K.ACTIVATION_CODES)
#: compiled vs reference, one step: float32 activations within an ulp, products of a few
TOL = {np.float32: dict(rtol=3e-6, atol=3e-7), np.float64: dict(rtol=1e-12, atol=1e-13)}


def _codes(first: int, slots: int):
    """Activation codes cycling through every activation, starting at ``first``."""
    codes = np.array([(first + k) % len(ALL_ACTS) for k in range(slots)], np.int64)
    rng = np.random.default_rng(first)
    return codes, rng.uniform(0.2, 1.5, slots), rng.uniform(-0.5, 0.8, slots)


def _arr(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


#: every activation start and clip meets both dtypes; the sizes (one row or several, a
#: hidden size of 1, odd, and past a SIMD width) rotate against them, so each size meets each
#: dtype and several activations (the full product was 120 cases a kernel, the same code paths)
_SIZES = [(1, 1), (3, 5), (3, 33), (1, 33), (3, 1), (1, 5)]
STEP_GRID = [(dtype, *_SIZES[k % len(_SIZES)], acts, clip)
             for k, (dtype, acts, clip) in enumerate(itertools.product(
                 [np.float32, np.float64], ["default", 0, 3, 6, 9], [np.inf, 0.6]))]


def _step_inputs(dtype, N, H, gates, acts, seed):
    rng = np.random.default_rng(seed)
    slots = {1: 1, 3: 2, 4: 3}[gates]
    if acts == "default":
        codes = np.array([0, 1, 1][:slots], np.int64)
        alphas, betas = np.zeros(slots), np.zeros(slots)
    else:
        codes, alphas, betas = _codes(acts, slots)
    lens = np.array([2, 1, 3][:N], np.int64)                # at t = 1 the second row is dead
    return rng, codes, alphas, betas, lens


def _run_both(kernel, make_args, **tol):
    """Run ``kernel``'s compiled and reference forms on fresh copies of the same arguments;
    compare every array argument afterwards (the outputs and the states updated in place)."""
    results = []
    for impl in (kernel.compiled, kernel.reference):
        args = make_args()
        impl(*args)
        results.append([a for a in args if isinstance(a, np.ndarray)])
    for got, ref in zip(*results):
        np.testing.assert_allclose(got, ref, **tol)


@pytest.mark.parametrize("dtype,N,H,acts,clip", STEP_GRID)
def test_rnn_step(dtype, N, H, acts, clip):
    rng, codes, al, be, lens = _step_inputs(dtype, N, H, 1, acts, 1)
    xw, hr, rb, h = (_arr(rng, s, dtype) for s in ((N, H), (N, H), (H,), (N, H)))
    _run_both(K.rnn_step, lambda: (xw.copy(), hr.copy(), rb.copy(), h.copy(),
                                   np.full((N, H), 7, dtype), lens, 1, codes, al, be, clip),
              **TOL[dtype])


@pytest.mark.parametrize("dtype,N,H,acts,clip", STEP_GRID)
def test_gru_step(dtype, N, H, acts, clip):
    rng, codes, al, be, lens = _step_inputs(dtype, N, H, 3, acts, 2)
    xw, hr, rb, h = (_arr(rng, s, dtype) for s in ((N, 3 * H), (N, 3 * H), (3 * H,), (N, H)))
    _run_both(K.gru_step_general, lambda: (xw, hr, rb, h.copy(), np.full((N, H), 7, dtype),
                                           lens, 1, codes, al, be, clip), **TOL[dtype])
    if acts == "default" and clip == np.inf:      # the plain kernel: the same, bit for bit
        _run_both(K.gru_step, lambda: (xw, hr, rb, h.copy(), np.full((N, H), 7, dtype), lens,
                                       1), **TOL[dtype])
        general, plain = h.copy(), h.copy()
        y1, y2 = np.empty((N, H), dtype), np.empty((N, H), dtype)
        K.gru_step_general(xw, hr, rb, general, y1, lens, 1, codes, al, be, clip)
        K.gru_step(xw, hr, rb, plain, y2, lens, 1)
        np.testing.assert_array_equal(plain, general)
        np.testing.assert_array_equal(y2, y1)


@pytest.mark.parametrize("dtype,N,H,acts,clip", STEP_GRID)
def test_gru_gates_and_candidate(dtype, N, H, acts, clip):
    rng, codes, al, be, lens = _step_inputs(dtype, N, H, 3, acts, 3)
    xw, hr, rb, h, q = (_arr(rng, s, dtype) for s in ((N, 3 * H), (N, 2 * H), (3 * H,),
                                                      (N, H), (N, H)))
    _run_both(K.gru_gates, lambda: (xw, hr, rb, h, np.empty((N, H), dtype),
                                    np.empty((N, H), dtype), codes, al, be, clip),
              **TOL[dtype])
    z = rng.uniform(0, 1, (N, H)).astype(dtype)
    _run_both(K.gru_candidate, lambda: (xw, q, rb, z, h.copy(), np.full((N, H), 7, dtype),
                                        lens, 1, codes, al, be, clip), **TOL[dtype])


@pytest.mark.parametrize("peep,input_forget", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("dtype,N,H,acts,clip", STEP_GRID)
def test_lstm_step(dtype, N, H, acts, clip, peep, input_forget):
    rng, codes, al, be, lens = _step_inputs(dtype, N, H, 4, acts, 4)
    xw, hr, rb, p, h, c = (_arr(rng, s, dtype) for s in ((N, 4 * H), (N, 4 * H), (4 * H,),
                                                         (3 * H,), (N, H), (N, H)))
    _run_both(K.lstm_step_general, lambda: (xw, hr, rb, p, h.copy(), c.copy(),
                                            np.full((N, H), 7, dtype), lens, 1, codes, al, be,
                                            clip, input_forget, peep), **TOL[dtype])
    if acts == "default" and clip == np.inf and not peep:   # the plain kernel
        _run_both(K.lstm_step, lambda: (xw, hr, rb, h.copy(), c.copy(),
                                        np.full((N, H), 7, dtype), lens, 1), **TOL[dtype])
        states = [(h.copy(), c.copy(), np.empty((N, H), dtype)) for _ in range(2)]
        K.lstm_step_general(xw, hr, rb, p, *states[0][:2], states[0][2], lens, 1, codes, al,
                            be, clip, False, False)
        K.lstm_step(xw, hr, rb, *states[1][:2], states[1][2], lens, 1)
        for a, b in zip(*states):
            np.testing.assert_array_equal(a, b)


def test_dead_rows_output_zeros_and_keep_their_state():
    rng = np.random.default_rng(5)
    N, H = 3, 4
    xw, hr, rb, p = (_arr(rng, s, np.float32) for s in ((N, 4 * H), (N, 4 * H), (4 * H,),
                                                        (3 * H,)))
    h, c = _arr(rng, (N, H), np.float32), _arr(rng, (N, H), np.float32)
    h0, c0, y = h.copy(), c.copy(), np.full((N, H), 7, np.float32)
    lens = np.array([5, 2, 0], np.int64)
    K.lstm_step(xw, hr, rb, h, c, y, lens, 2)
    assert not y[1:].any() and (y[0] != 0).all()
    np.testing.assert_array_equal(h[1:], h0[1:])
    np.testing.assert_array_equal(c[1:], c0[1:])
    np.testing.assert_array_equal(h[0], y[0])


def test_activation_codes_cover_the_ops_activations():
    from flowgrad.ops.recurrent import _ACTIVATIONS
    assert set(K.ACTIVATION_CODES) == set(_ACTIVATIONS)
    v = np.linspace(-4, 4, 41)
    for name, code in K.ACTIVATION_CODES.items():
        a_default, b_default, f, _ = _ACTIVATIONS[name]
        a = 0.7 if a_default is not None else 0.0
        b = 0.3 if b_default is not None else 0.0
        np.testing.assert_allclose(K.activation_numpy(code, v, a, b), f(v, a, b), rtol=1e-12,
                                   atol=1e-15, err_msg=name)


# -- the evaluation forward vs the numpy engine ---------------------------------------------

OPS = {"rnn": (RNN, {}), "gru": (GRU, {"linear_before_reset": True}),
       "gru_reset_first": (GRU, {}), "lstm": (LSTM, {})}
EXTRAS = {
    "plain": {},
    "clip": {"clip": 0.7},
    "acts": "acts",                  # every activation, in turn, bounded operands
    "lstm_peepholes": {"peep": True},
    "lstm_input_forget": {"input_forget": True, "peep": True},
}
#: the evaluation forward vs the numpy engine, relative to 1 + |value|: float32 rounding
#: compounded over a few steps (measured: 9e-7 for the default activations)
OP_TOL = {np.float32: 4e-6, np.float64: 1e-12}


def _op_case(kind, direction, layout, T, N, H, lens, states, extra, dtype, seed):
    cls, attrs = OPS[kind]
    attrs = dict(attrs, direction=direction, layout=layout)
    D, G, I = (2 if direction == "bidirectional" else 1), cls.gates, 3
    rng = np.random.default_rng(seed)
    scale = 0.5
    peep = False
    if extra == "acts":
        slots = len(cls.default_acts) * D
        start = seed % len(ALL_ACTS)
        attrs["activations"] = [ALL_ACTS[(start + k) % len(ALL_ACTS)] for k in range(slots)]
        attrs["activation_alpha"] = list(rng.uniform(0.2, 0.9, 2 * slots))
        attrs["activation_beta"] = list(rng.uniform(0.0, 0.5, 2 * slots))
        scale = 0.2                  # unbounded activations stay small over the steps
    elif extra.startswith("lstm"):
        if cls is not LSTM:
            return None
        attrs["input_forget"] = EXTRAS[extra].get("input_forget", False)
        peep = True
    else:
        attrs.update(EXTRAS[extra])
    op = cls(**attrs)

    def arr(*shape):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    X = arr(T, N, I) if layout == 0 else arr(N, T, I)
    state = (lambda: arr(D, N, H) if layout == 0 else arr(N, D, H)) if states else lambda: None
    args = [X, arr(D, G * H, I), arr(D, G * H, H), arr(D, 2 * G * H),
            rng.integers(0, T + 1, N).astype(np.int32) if lens else None, state()]
    if cls is LSTM:
        args += [state(), arr(D, 3 * H) if peep else None]
    return op, args


#: every other case of the full product (the extras, five of them, rotate against the rest,
#: so every value of every axis still meets every other axis's values)
OP_GRID = list(itertools.product(
    list(OPS), ["forward", "reverse", "bidirectional"], [0, 1], [1, 5], [1, 3], [1, 8],
    [False, True], [False, True], list(EXTRAS)))[::2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunk", range(8))
def test_evaluation_forward_matches_the_numpy_engine(chunk, dtype):
    """The grid in eight chunks (one parametrised test per case would be 1,500 ids)."""
    checked = 0
    for i, case in enumerate(OP_GRID[chunk::8]):
        made = _op_case(*case, dtype, seed=i + 100 * chunk)
        if made is None:
            continue
        op, args = made
        fast = op.forward(Context(False, False, None, DEFAULT), *args)
        engine = op.forward(Context(True, False, None, DEFAULT), *args)
        assert len(fast) == len(engine)
        for got, ref in zip(fast, engine):
            assert got.shape == ref.shape and got.dtype == ref.dtype == dtype
            assert got.flags.c_contiguous
            err = np.max(np.abs(got - ref) / (1 + np.abs(ref))) if got.size else 0.0
            assert err <= OP_TOL[dtype], (case, err)
        checked += 1
    assert checked > 60


def test_evaluation_forward_is_deterministic():
    op, args = _op_case("lstm", "bidirectional", 1, 5, 3, 8, True, True, "plain",
                        np.float32, seed=7)
    first = op.forward(Context(False, False, None, DEFAULT), *args)
    for _ in range(3):
        again = op.forward(Context(False, False, None, DEFAULT), *args)
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)


def test_evaluation_forward_leaves_its_operands_alone():
    op, args = _op_case("gru_reset_first", "bidirectional", 0, 4, 2, 5, True, True, "plain",
                        np.float32, seed=8)
    copies = [None if a is None else a.copy() for a in args]
    op.forward(Context(False, False, None, DEFAULT), *args)
    for a, c in zip(args, copies):
        if a is not None:
            np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("kind", list(OPS))
@pytest.mark.parametrize("T,N", [(0, 2), (3, 0)])
def test_empty_sequences_and_batches(kind, T, N):
    """No steps: Y is empty and the final states are the initial ones; no examples: empty."""
    op, args = _op_case(kind, "bidirectional", 0, max(T, 1), max(N, 1), 4, False, True,
                        "plain", np.float32, seed=9)
    args[0] = args[0][:T, :N]
    args[5:] = [None if a is None or a.ndim != 3 else a[:, :N] for a in args[5:]]
    fast = op.forward(Context(False, False, None, DEFAULT), *args)
    engine = op.forward(Context(True, False, None, DEFAULT), *args)
    assert fast[0].shape == (T, 2, N, 4)
    for got, ref in zip(fast, engine):
        np.testing.assert_array_equal(got, ref)
    if T == 0:
        np.testing.assert_array_equal(fast[1], args[5])


@pytest.mark.parametrize("kind", list(OPS))
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_constant_weights_are_read_through_transposes_made_once(kind, direction):
    """Where W and R are constants of the plan (a frozen plan's params), the evaluation
    forward reads row-major transposes kept by the backend — made on the first call, reused
    after — and gives what it gives on live weights (read through transposed views)."""
    op, args = _op_case(kind, direction, 0, 5, 3, 8, False, True, "plain", np.float32,
                        seed=12)
    W, R = args[1], args[2]
    live = op.forward(Context(False, False, None, DEFAULT), *args)
    made = []

    class Recording(CPUBackend):
        __slots__ = ()

        def prepared(self, value, make, *key):
            return super().prepared(value, lambda v: (made.append(key), make(v))[1], *key)
    backend = Recording(constants=[W, R])
    for _ in range(2):
        frozen = op.forward(Context(False, False, None, backend), *args)
        for a, b in zip(live, frozen):
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    assert sorted(made) == [("recurrent R^T",), ("recurrent W^T",)], "made once each"
    made.clear()                        # live weights: read through the views, no copy
    op.forward(Context(False, False, None, Recording()), *args)
    assert made == []
