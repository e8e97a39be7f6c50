"""One time step of the recurrent cells (gru, lstm, rnn) in evaluation, as single-pass kernels.

Why: in the numpy engine (:mod:`flowgrad.ops.recurrent`) a time step is 25 to 45 numpy calls
around one or two small products — for a speech model's batch of one (silero VAD: an LSTM step
of hidden size 128; DeepFilterNet: GRU steps of 256) the calls cost more than the arithmetic.
Here the recurrent product stays in BLAS (``hr = h @ R^T``, one call per step) and everything
else of the step — bias, peepholes, clip, the gates' activations, the cell and state updates,
the ``sequence_lens`` mask and the output row — is one kernel call that reads each operand once.

Why not the whole sequence in one kernel: numba has no BLAS here (its ``np.dot`` needs scipy),
and a matrix-vector product in numba's own loops vectorises only with ``R`` transposed (an
``axpy`` per column) — a transposed copy of ``R`` costs numpy more per call (100-350 us for the
shapes above) than the per-step calls it would save (about 2 us each).

Arithmetic: gate inputs, activations and updates are evaluated in float64 and rounded once when
stored (the state ``h``, ``c`` and the output row), so float32 results differ from the numpy
engine's (which rounds after every operation) by float32 rounding only; the activations are
:mod:`.activations`' vectorisable helpers (float32: within an ulp).  These kernels serve
``forward`` without gradient only: training runs the numpy engine, whose tape backward needs.

``gru_step`` and ``lstm_step`` take ONNX's default activations, no clip (nor peepholes nor
``input_forget``); ``*_general`` take any: kept apart because numba compiles a kernel on first
use, and the dispatch over eleven activations at every gate costs 8 s of compilation that a
model with the defaults (every PyTorch export) should not pay.

Conventions shared by the kernels (``N`` examples, hidden size ``H``):

* ``xw``: ``(N, G·H)`` input projection of this step with the input bias added; ``hr``:
  ``h @ R^T`` of this step (``(N, G·H)``); ``rb``: the recurrent bias ``(G·H,)``;
* ``h`` (and lstm's ``c``): ``(N, H)`` state, updated in place; ``y``: ``(N, H)`` output row;
* ``lens``: ``(N,)`` int64 sequence lengths: an example with ``t >= lens[n]`` outputs zeros and
  keeps its state;
* ``codes``: the activations as :data:`ACTIVATION_CODES` (int64, one per activation slot),
  ``alphas`` / ``betas`` their float64 parameters; ``clip``: bound of every gate input (inf:
  none).
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel, jit
from .activations import _expm1, _sigmoid, _softplus, _tanh

__all__ = ["ACTIVATION_CODES", "activation_numpy", "rnn_step", "gru_step", "gru_step_general",
           "gru_gates", "gru_candidate", "lstm_step", "lstm_step_general"]

#: ONNX's recurrent activations, numbered for the kernels
ACTIVATION_CODES = {"Sigmoid": 0, "Tanh": 1, "Relu": 2, "Affine": 3, "LeakyRelu": 4,
                    "ThresholdedRelu": 5, "ScaledTanh": 6, "HardSigmoid": 7, "Elu": 8,
                    "Softsign": 9, "Softplus": 10}
#: (codes, alphas, betas) of ONNX's default activations: gru (Sigmoid, Tanh), lstm (+ Tanh)
_DEFAULT_GRU = (np.array([0, 1], np.int64), np.zeros(2), np.zeros(2), np.inf)
_DEFAULT_LSTM = (np.array([0, 1, 1], np.int64), np.zeros(3), np.zeros(3), np.inf)


# -- activations ----------------------------------------------------------------------------

@jit
def _act(code, v, a, b, f32):
    """Activation ``code`` of the float64 ``v`` (alpha ``a``, beta ``b``); nan stays nan."""
    if code == 0:
        return _sigmoid(v, f32)
    if code == 1:
        return _tanh(v, f32)
    if code == 2:
        return 0.0 if v < 0.0 else v
    if code == 3:
        return a * v + b
    if code == 4:
        return a * v if v < 0.0 else v
    if code == 5:
        return v if v > a else 0.0
    if code == 6:
        return a * _tanh(b * v, f32)
    if code == 7:
        w = a * v + b
        return 0.0 if w < 0.0 else (1.0 if w > 1.0 else w)
    if code == 8:
        return a * _expm1(min(v, 0.0), f32) if v < 0.0 else v
    if code == 9:
        return np.divide(v, 1.0 + abs(v))
    return _softplus(v, f32)


@jit
def _clipped(v, clip):
    """``v`` bounded to [-clip, clip] (clip inf: unchanged); nan stays nan."""
    return -clip if v < -clip else (clip if v > clip else v)


def activation_numpy(code: int, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """The numpy form of :func:`_act` on a float64 array (the references' activations)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if code == 0:
            e = np.exp(-np.abs(v))
            return np.where(v >= 0, 1 / (1 + e), e / (1 + e))
        if code == 1:
            return np.tanh(v)
        if code == 2:
            return np.where(v < 0, 0.0, v)
        if code == 3:
            return a * v + b
        if code == 4:
            return np.where(v < 0, a * v, v)
        if code == 5:
            return np.where(v > a, v, 0.0)
        if code == 6:
            return a * np.tanh(b * v)
        if code == 7:
            return np.clip(a * v + b, 0.0, 1.0)
        if code == 8:
            return np.where(v < 0, a * np.expm1(np.minimum(v, 0.0)), v)
        if code == 9:
            return v / (1 + np.abs(v))
        return np.maximum(v, 0) + np.log1p(np.exp(-np.abs(v)))


def _act_ref(codes, alphas, betas, k, v, clip=None):
    if clip is not None:
        v = np.clip(v, -clip, clip)
    return activation_numpy(int(codes[k]), v, float(alphas[k]), float(betas[k]))


def _live(lens, t):
    """Rows of the examples whose step ``t`` is real."""
    return np.asarray(lens) > t


# -- rnn ------------------------------------------------------------------------------------

def _rnn_step_reference(xw, hr, rb, h, y, lens, t, codes, alphas, betas, clip):
    live = _live(lens, t)
    pre = xw.astype(np.float64) + hr + rb
    new = _act_ref(codes, alphas, betas, 0, pre, clip).astype(h.dtype)
    h[live] = new[live]
    y[...] = np.where(live[:, None], new, 0)


@jit
def _rnn_body(xw, hr, rb, h, y, lens, t, codes, alphas, betas, clip, f32):
    N, H = h.shape
    for n in range(N):
        if t >= lens[n]:
            for j in range(H):
                y[n, j] = 0
            continue
        for j in range(H):
            v = _act(codes[0], _clipped(np.float64(xw[n, j]) + np.float64(hr[n, j])
                                        + np.float64(rb[j]), clip), alphas[0], betas[0], f32)
            h[n, j] = v
            y[n, j] = v


@kernel(_rnn_step_reference)
def rnn_step(xw, hr, rb, h, y, lens, t, codes, alphas, betas, clip):
    """h = f(clip(xw + hr + rb)) for the live rows; y = h there, 0 elsewhere."""
    if h.itemsize == 4:
        _rnn_body(xw, hr, rb, h, y, lens, t, codes, alphas, betas, clip, True)
    else:
        _rnn_body(xw, hr, rb, h, y, lens, t, codes, alphas, betas, clip, False)


# -- gru ------------------------------------------------------------------------------------

def _gru_step_reference(xw, hr, rb, h, y, lens, t, codes, alphas, betas, clip):
    H = h.shape[1]
    live = _live(lens, t)
    x64, hr64, h64 = xw.astype(np.float64), hr.astype(np.float64), h.astype(np.float64)
    zr = _act_ref(codes, alphas, betas, 0, x64[:, :2 * H] + hr64[:, :2 * H] + rb[:2 * H], clip)
    z, r = zr[:, :H], zr[:, H:]
    cand = _act_ref(codes, alphas, betas, 1,
                    x64[:, 2 * H:] + r * (hr64[:, 2 * H:] + rb[2 * H:]), clip)
    new = ((1 - z) * cand + z * h64).astype(h.dtype)
    h[live] = new[live]
    y[...] = np.where(live[:, None], new, 0)


@jit
def _gru_body(xw, hr, rb, h, y, lens, t, f32):
    N, H = h.shape
    for n in range(N):
        if t >= lens[n]:
            for j in range(H):
                y[n, j] = 0
            continue
        for j in range(H):
            z = _sigmoid(np.float64(xw[n, j]) + np.float64(hr[n, j]) + np.float64(rb[j]), f32)
            k = H + j
            r = _sigmoid(np.float64(xw[n, k]) + np.float64(hr[n, k]) + np.float64(rb[k]), f32)
            k = 2 * H + j
            cand = _tanh(np.float64(xw[n, k]) + r * (np.float64(hr[n, k]) + np.float64(rb[k])),
                         f32)
            v = (1.0 - z) * cand + z * np.float64(h[n, j])
            h[n, j] = v
            y[n, j] = v


def _gru_step_plain_reference(xw, hr, rb, h, y, lens, t):
    _gru_step_reference(xw, hr, rb, h, y, lens, t, *_DEFAULT_GRU)


@kernel(_gru_step_plain_reference)
def gru_step(xw, hr, rb, h, y, lens, t):
    """A GRU step with ``linear_before_reset`` and ONNX's default activations, no clip:
    z, r = sigmoid(xw + hr + rb) (their blocks), candidate tanh(xw_h + r·(hr_h + rb_h)),
    h = (1 − z)·candidate + z·h.  (Its own kernel so that a model with the defaults does not
    compile the dispatch over every activation: 2 s of numba instead of 10.)"""
    if h.itemsize == 4:
        _gru_body(xw, hr, rb, h, y, lens, t, True)
    else:
        _gru_body(xw, hr, rb, h, y, lens, t, False)


@jit
def _gru_general_body(xw, hr, rb, h, y, lens, t, codes, alphas, betas, clip, f32):
    N, H = h.shape
    for n in range(N):
        if t >= lens[n]:
            for j in range(H):
                y[n, j] = 0
            continue
        for j in range(H):
            z = _act(codes[0], _clipped(np.float64(xw[n, j]) + np.float64(hr[n, j])
                                        + np.float64(rb[j]), clip), alphas[0], betas[0], f32)
            k = H + j
            r = _act(codes[0], _clipped(np.float64(xw[n, k]) + np.float64(hr[n, k])
                                        + np.float64(rb[k]), clip), alphas[0], betas[0], f32)
            k = 2 * H + j
            rec = np.float64(hr[n, k]) + np.float64(rb[k])
            cand = _act(codes[1], _clipped(np.float64(xw[n, k]) + r * rec, clip),
                        alphas[1], betas[1], f32)
            v = (1.0 - z) * cand + z * np.float64(h[n, j])
            h[n, j] = v
            y[n, j] = v


@kernel(_gru_step_reference)
def gru_step_general(xw, hr, rb, h, y, lens, t, codes, alphas, betas, clip):
    """:func:`gru_step` for any activations and clip."""
    if h.itemsize == 4:
        _gru_general_body(xw, hr, rb, h, y, lens, t, codes, alphas, betas, clip, True)
    else:
        _gru_general_body(xw, hr, rb, h, y, lens, t, codes, alphas, betas, clip, False)


def _gru_gates_reference(xw, hr, rb, h, z, rh, codes, alphas, betas, clip):
    H = h.shape[1]
    zr = _act_ref(codes, alphas, betas, 0, xw[:, :2 * H].astype(np.float64)
                  + hr[:, :2 * H] + rb[:2 * H], clip)
    z[...] = zr[:, :H]
    rh[...] = zr[:, H:] * h


@jit
def _gru_gates_body(xw, hr, rb, h, z, rh, codes, alphas, betas, clip, f32):
    N, H = h.shape
    for n in range(N):
        for j in range(H):
            z[n, j] = _act(codes[0], _clipped(np.float64(xw[n, j]) + np.float64(hr[n, j])
                                              + np.float64(rb[j]), clip),
                           alphas[0], betas[0], f32)
            k = H + j
            r = _act(codes[0], _clipped(np.float64(xw[n, k]) + np.float64(hr[n, k])
                                        + np.float64(rb[k]), clip), alphas[0], betas[0], f32)
            rh[n, j] = r * np.float64(h[n, j])


@kernel(_gru_gates_reference)
def gru_gates(xw, hr, rb, h, z, rh, codes, alphas, betas, clip):
    """The first half of a GRU step without ``linear_before_reset``: from ``hr = h @ R_zr^T``
    (``(N, 2H)``), the update gate ``z`` and the reset state ``r·h`` (the operand of the
    candidate's product, which the caller runs in BLAS before :func:`gru_candidate`)."""
    if h.itemsize == 4:
        _gru_gates_body(xw, hr, rb, h, z, rh, codes, alphas, betas, clip, True)
    else:
        _gru_gates_body(xw, hr, rb, h, z, rh, codes, alphas, betas, clip, False)


def _gru_candidate_reference(xw, q, rb, z, h, y, lens, t, codes, alphas, betas, clip):
    H = h.shape[1]
    live = _live(lens, t)
    cand = _act_ref(codes, alphas, betas, 1,
                    xw[:, 2 * H:].astype(np.float64) + q + rb[2 * H:], clip)
    z64 = z.astype(np.float64)
    new = ((1 - z64) * cand + z64 * h).astype(h.dtype)
    h[live] = new[live]
    y[...] = np.where(live[:, None], new, 0)


@jit
def _gru_candidate_body(xw, q, rb, z, h, y, lens, t, codes, alphas, betas, clip, f32):
    N, H = h.shape
    for n in range(N):
        if t >= lens[n]:
            for j in range(H):
                y[n, j] = 0
            continue
        for j in range(H):
            k = 2 * H + j
            cand = _act(codes[1], _clipped(np.float64(xw[n, k]) + np.float64(q[n, j])
                                           + np.float64(rb[k]), clip), alphas[1], betas[1], f32)
            zz = np.float64(z[n, j])
            v = (1.0 - zz) * cand + zz * np.float64(h[n, j])
            h[n, j] = v
            y[n, j] = v


@kernel(_gru_candidate_reference)
def gru_candidate(xw, q, rb, z, h, y, lens, t, codes, alphas, betas, clip):
    """The second half of a GRU step without ``linear_before_reset``: candidate
    g(xw_h + q + rb_h) with ``q = (r·h) @ R_h^T``, then h = (1 − z)·candidate + z·h."""
    if h.itemsize == 4:
        _gru_candidate_body(xw, q, rb, z, h, y, lens, t, codes, alphas, betas, clip, True)
    else:
        _gru_candidate_body(xw, q, rb, z, h, y, lens, t, codes, alphas, betas, clip, False)


# -- lstm -----------------------------------------------------------------------------------

def _lstm_step_reference(xw, hr, rb, p, h, c, y, lens, t, codes, alphas, betas, clip,
                         input_forget, peep):
    H = h.shape[1]
    live = _live(lens, t)
    pre = xw.astype(np.float64) + hr + rb
    pi, po, pf, pg = (pre[:, k * H:(k + 1) * H] for k in range(4))
    c64 = c.astype(np.float64)
    if peep:
        pi = pi + p[:H] * c64
        pf = pf + p[2 * H:] * c64
    i = _act_ref(codes, alphas, betas, 0, pi, clip)
    f = 1 - i if input_forget else _act_ref(codes, alphas, betas, 0, pf, clip)
    g = _act_ref(codes, alphas, betas, 1, pg, clip)
    cell = f * c64 + i * g
    if peep:
        po = po + p[H:2 * H] * cell
    o = _act_ref(codes, alphas, betas, 0, po, clip)
    new = (o * _act_ref(codes, alphas, betas, 2, cell)).astype(h.dtype)
    h[live] = new[live]
    c[live] = cell.astype(c.dtype)[live]
    y[...] = np.where(live[:, None], new, 0)


@jit
def _lstm_body(xw, hr, rb, h, c, y, lens, t, f32):
    N, H = h.shape
    for n in range(N):
        if t >= lens[n]:
            for j in range(H):
                y[n, j] = 0
            continue
        for j in range(H):
            i = _sigmoid(np.float64(xw[n, j]) + np.float64(hr[n, j]) + np.float64(rb[j]), f32)
            k = H + j
            o = _sigmoid(np.float64(xw[n, k]) + np.float64(hr[n, k]) + np.float64(rb[k]), f32)
            k = 2 * H + j
            f = _sigmoid(np.float64(xw[n, k]) + np.float64(hr[n, k]) + np.float64(rb[k]), f32)
            k = 3 * H + j
            g = _tanh(np.float64(xw[n, k]) + np.float64(hr[n, k]) + np.float64(rb[k]), f32)
            cell = f * np.float64(c[n, j]) + i * g
            v = o * _tanh(cell, f32)
            c[n, j] = cell
            h[n, j] = v
            y[n, j] = v


def _lstm_step_plain_reference(xw, hr, rb, h, c, y, lens, t):
    H = h.shape[1]
    _lstm_step_reference(xw, hr, rb, np.zeros(3 * H, h.dtype), h, c, y, lens, t,
                         *_DEFAULT_LSTM, False, False)


@kernel(_lstm_step_plain_reference)
def lstm_step(xw, hr, rb, h, c, y, lens, t):
    """An LSTM step (gate order i, o, f, g) with ONNX's default activations and no clip,
    peepholes or ``input_forget``: c = f·c + i·g, h = o·tanh(c).  (Its own kernel, as
    :func:`gru_step`.)"""
    if h.itemsize == 4:
        _lstm_body(xw, hr, rb, h, c, y, lens, t, True)
    else:
        _lstm_body(xw, hr, rb, h, c, y, lens, t, False)


@jit
def _lstm_general_body(xw, hr, rb, p, h, c, y, lens, t, codes, alphas, betas, clip,
                       input_forget, peep, f32):
    N, H = h.shape
    for n in range(N):
        if t >= lens[n]:
            for j in range(H):
                y[n, j] = 0
            continue
        for j in range(H):
            cj = np.float64(c[n, j])
            pi = np.float64(xw[n, j]) + np.float64(hr[n, j]) + np.float64(rb[j])
            k = H + j
            po = np.float64(xw[n, k]) + np.float64(hr[n, k]) + np.float64(rb[k])
            k = 2 * H + j
            pf = np.float64(xw[n, k]) + np.float64(hr[n, k]) + np.float64(rb[k])
            k = 3 * H + j
            pg = np.float64(xw[n, k]) + np.float64(hr[n, k]) + np.float64(rb[k])
            if peep:
                pi += np.float64(p[j]) * cj
                pf += np.float64(p[2 * H + j]) * cj
            i = _act(codes[0], _clipped(pi, clip), alphas[0], betas[0], f32)
            if input_forget:
                f = 1.0 - i
            else:
                f = _act(codes[0], _clipped(pf, clip), alphas[0], betas[0], f32)
            g = _act(codes[1], _clipped(pg, clip), alphas[1], betas[1], f32)
            cell = f * cj + i * g
            if peep:
                po += np.float64(p[H + j]) * cell
            o = _act(codes[0], _clipped(po, clip), alphas[0], betas[0], f32)
            v = o * _act(codes[2], cell, alphas[2], betas[2], f32)
            c[n, j] = cell
            h[n, j] = v
            y[n, j] = v


@kernel(_lstm_step_reference)
def lstm_step_general(xw, hr, rb, p, h, c, y, lens, t, codes, alphas, betas, clip,
                      input_forget, peep):
    """An LSTM step with any activations, clip, peepholes ``p`` (``(3H,)``, order i, o, f;
    used when ``peep``) and f = 1 − i with ``input_forget``."""
    if h.itemsize == 4:
        _lstm_general_body(xw, hr, rb, p, h, c, y, lens, t, codes, alphas, betas, clip,
                           input_forget, peep, True)
    else:
        _lstm_general_body(xw, hr, rb, p, h, c, y, lens, t, codes, alphas, betas, clip,
                           input_forget, peep, False)
