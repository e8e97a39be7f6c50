"""Recurrent layers: lstm, gru, rnn, with ONNX semantics and backward through time.

The three ops follow the ONNX operators LSTM, GRU and RNN input for input and attribute for
attribute, so imported models (PyTorch's ``nn.LSTM``/``nn.GRU``/``nn.RNN`` export to them) run,
differentiate and train unchanged:

* inputs ``X, W, R, B?, sequence_lens?, initial_h?`` (+ ``initial_c?, P?`` for lstm), outputs
  ``Y, Y_h`` (+ ``Y_c``); weights are stacked per direction (``W`` is ``(D, gates*H, I)``, gate
  order ``iofc`` for lstm and ``zrh`` for gru, ``B`` holds the input then the recurrent biases);
* ``direction`` forward, reverse or bidirectional (``D = 2``, the reverse pass second);
* ``layout`` 0 (``X`` is ``(T, N, I)``, ``Y`` is ``(T, D, N, H)``, states ``(D, N, H)``) or 1
  (batch first: ``(N, T, I)``, ``(N, T, D, H)``, ``(N, D, H)``);
* ``activations`` per direction (lstm: f, g, h; gru: f, g; rnn: f), any of ONNX's list, with
  ``activation_alpha`` / ``activation_beta`` consumed in order by the activations that take
  them (as onnxruntime does); ``clip`` bounds every activation's gate input;
* ``sequence_lens``: steps at or past an example's length output zeros and leave its state
  alone, so ``Y_h`` is the state after its last real step; the reverse direction starts at the
  example's own last step;
* lstm peepholes ``P`` (``(D, 3H)``, order ``iof``) and ``input_forget`` (``f = 1 - i``); gru
  ``linear_before_reset``.

Why one engine: the three cells differ only in their step. :class:`_Recurrent` owns layout,
directions, masks and the bookkeeping of gradients; a subclass supplies ``_step`` (one time step
for every example at once, returning what its backward needs) and ``_step_back``. The input
projection ``X @ W^T`` of every step and both directions is one matmul before the time loop,
and in backward the gradients of ``W``, ``R``, ``B`` and ``X`` are one matmul each after it:
only the recurrent product stays inside the loop, as it must.

Why a second forward: a step of that engine is 25 to 45 numpy calls around one or two small
products, which for a speech model's batch of one costs more than the arithmetic.  Without
gradient nothing needs taping, so ``forward`` then runs ``_forward_eval``: the same input
projection, then per step the recurrent product in BLAS and the rest of the step in one compiled
kernel (:mod:`flowgrad.kernels.recurrent`, numpy references beside them).  It evaluates the gates
in float64 and rounds once, so it agrees with the engine to float32 rounding (bounded in
tests/test_kernels_recurrent.py), and training, which needs the tape, keeps the engine.

Weights transposed once: both products read a weight transposed (``X @ W^T``, ``h @ R^T``),
and OpenBLAS reads a transposed operand slower than a row-major one — measured with the
weights out of cache, as the rest of a model leaves them: DeepFilterNet's GRU (256 hidden,
6 steps), input projection 345 -> 250 µs, the six recurrent products 390 -> 280 µs.  So where
the weights are constants of the plan (a frozen plan's params: :meth:`CPUBackend.row_major`)
evaluation reads row-major transposes kept by the backend; live weights, which optimizers
change, are read through the transposed views as before (a copy per call would cost more).
"""
from __future__ import annotations

import numpy as np

from ..errors import AttrError
from ..op import Attr, Op, ShapeError, Spec, format_shape


def _sigmoid(z):
    """1 / (1 + e^-z) without overflow in float32 for any z."""
    e = np.exp(-np.abs(z))
    r = 1 / (1 + e)
    return np.where(z >= 0, r, e * r)


def _softplus(z):
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


# name -> (alpha default, beta default, f(x, a, b), f'(x, y, a, b)); None: takes no alpha/beta
_ACTIVATIONS = {
    "Sigmoid": (None, None, lambda x, a, b: _sigmoid(x), lambda x, y, a, b: y * (1 - y)),
    "Tanh": (None, None, lambda x, a, b: np.tanh(x), lambda x, y, a, b: 1 - y * y),
    "Relu": (None, None, lambda x, a, b: np.maximum(x, 0),
             lambda x, y, a, b: (x > 0).astype(x.dtype)),
    "Affine": (1.0, 0.0, lambda x, a, b: a * x + b,
               lambda x, y, a, b: np.full_like(x, a)),
    "LeakyRelu": (0.01, None, lambda x, a, b: np.where(x < 0, a * x, x),
                  lambda x, y, a, b: np.where(x < 0, a, 1).astype(x.dtype)),
    "ThresholdedRelu": (1.0, None, lambda x, a, b: np.where(x > a, x, 0).astype(x.dtype),
                        lambda x, y, a, b: (x > a).astype(x.dtype)),
    "ScaledTanh": (1.0, 1.0, lambda x, a, b: a * np.tanh(b * x),
                   lambda x, y, a, b: a * b * (1 - np.square(np.tanh(b * x)))),
    "HardSigmoid": (0.2, 0.5, lambda x, a, b: np.clip(a * x + b, 0, 1),
                    lambda x, y, a, b: np.where((y > 0) & (y < 1), a, 0).astype(x.dtype)),
    "Elu": (1.0, None, lambda x, a, b: np.where(x < 0, a * np.expm1(np.minimum(x, 0)), x),
            lambda x, y, a, b: np.where(x < 0, y + a, 1).astype(x.dtype)),
    "Softsign": (None, None, lambda x, a, b: x / (1 + np.abs(x)),
                 lambda x, y, a, b: 1 / np.square(1 + np.abs(x))),
    "Softplus": (None, None, lambda x, a, b: _softplus(x),
                 lambda x, y, a, b: _sigmoid(x)),
}
_BETA_USERS = {"Affine", "ScaledTanh", "HardSigmoid"}
_CANONICAL = {name.lower(): name for name in _ACTIVATIONS}


class _Act:
    """One resolved activation: ``act(x)`` and ``act.grad(x, y)`` (y = act(x))."""

    __slots__ = ("name", "alpha", "beta", "_f", "_df")

    def __init__(self, name: str, alpha: float | None, beta: float | None):
        self.name, self.alpha, self.beta = name, alpha, beta
        _, _, self._f, self._df = _ACTIVATIONS[name]

    def __call__(self, x):
        return self._f(x, self.alpha, self.beta).astype(x.dtype, copy=False)

    def grad(self, x, y):
        return self._df(x, y, self.alpha, self.beta).astype(x.dtype, copy=False)


_DOC_ACTS = ("activation names per direction (ONNX's list: Sigmoid, Tanh, Relu, Affine, "
             "LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, Softsign, Softplus); "
             "default: ONNX's")


class _Recurrent(Op):
    """The shared engine of lstm, gru and rnn; see the module doc."""

    no_grad_inputs = frozenset({"sequence_lens"})
    gates = 1                       # gate blocks in W and R
    default_acts: tuple[str, ...] = ()
    common_attrs = {
        "hidden_size": Attr("int", None, doc="H (checked against R; needed only by export)"),
        "direction": Attr("str", "forward", ("forward", "reverse", "bidirectional")),
        "layout": Attr("int", 0, (0, 1), doc="0: (T, N, ...), 1: batch first (N, T, ...)"),
        "activations": Attr("any", None, doc=_DOC_ACTS),
        "activation_alpha": Attr("floats", None, doc="consumed in order by the activations "
                                                     "that take an alpha"),
        "activation_beta": Attr("floats", None, doc="likewise for beta"),
        "clip": Attr("float", None, doc="bound every activation's input to [-clip, clip]"),
    }

    @property
    def num_directions(self) -> int:
        return 2 if self.direction == "bidirectional" else 1

    def check(self) -> None:
        """Resolve ``activations`` / alphas / betas into one :class:`_Act` list per direction.

        The canonical tuple of names replaces the given value, so a YAML list and a tuple give
        equal ops."""
        names = self.activations
        per = len(self.default_acts)
        if names is None:
            names = self.default_acts * self.num_directions
        else:
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise AttrError(f"{self.type}: 'activations' must be a list of names",
                                attr="activations")
            names = tuple(names)
            if len(names) == per and self.num_directions == 2:
                names = names * 2
            if len(names) != per * self.num_directions:
                raise AttrError(f"{self.type} with direction {self.direction} takes "
                                f"{per * self.num_directions} activations, got {len(names)}",
                                attr="activations")
            unknown = [n for n in names if n.lower() not in _CANONICAL]
            if unknown:
                raise AttrError(f"{self.type}: unknown activation {unknown[0]!r}; use one of "
                                f"{', '.join(_ACTIVATIONS)}", attr="activations")
            names = tuple(_CANONICAL[n.lower()] for n in names)
            self.activations = self._attr_values["activations"] = names
        if self.clip is not None and self.clip <= 0:
            raise AttrError(f"{self.type}: 'clip' must be positive", attr="clip")
        alphas = list(self.activation_alpha or ())
        betas = list(self.activation_beta or ())
        acts = []
        for name in names:
            a_default, b_default = _ACTIVATIONS[name][:2]
            alpha = (alphas.pop(0) if alphas else a_default) if a_default is not None else None
            beta = ((betas.pop(0) if betas else b_default) if name in _BETA_USERS else None)
            acts.append(_Act(name, alpha, beta))
        self._acts = [acts[d * per:(d + 1) * per] for d in range(self.num_directions)]
        # the same activations as the evaluation kernels take them (codes, alphas, betas)
        from ..kernels.recurrent import ACTIVATION_CODES
        self._kernel_acts = [
            (np.array([ACTIVATION_CODES[a.name] for a in d], np.int64),
             np.array([0.0 if a.alpha is None else a.alpha for a in d], np.float64),
             np.array([0.0 if a.beta is None else a.beta for a in d], np.float64))
            for d in self._acts]
        #: per direction: ONNX's default activations and no clip (the kernels' plain form)
        self._plain = [self.clip is None and tuple(a.name for a in d) == self.default_acts
                       for d in self._acts]

    # -- shapes ---------------------------------------------------------------------------
    def infer(self, X, W, R, B=None, sequence_lens=None, initial_h=None, *rest):
        if X.ndim != 3 or W.ndim != 3 or R.ndim != 3:
            raise ShapeError(f"{self.type} needs 3-d X, W and R, got X {format_shape(X.shape)}, "
                             f"W {format_shape(W.shape)}, R {format_shape(R.shape)}")
        hidden = R.shape[2] if R.shape[2] is not None else self.hidden_size
        if None not in (hidden, self.hidden_size) and hidden != self.hidden_size:
            raise ShapeError(f"{self.type}: hidden_size is {self.hidden_size} but R has shape "
                             f"{format_shape(R.shape)}")
        D, G = self.num_directions, self.gates
        for name, spec, want in (("W", W, (D, None if hidden is None else G * hidden, X.shape[2])),
                                 ("R", R, (D, None if hidden is None else G * hidden, hidden))):
            if any(None not in (a, b) and a != b for a, b in zip(spec.shape, want)):
                raise ShapeError(f"{self.type} ({self.direction}): '{name}' must have shape "
                                 f"{format_shape(want)}, got {format_shape(spec.shape)}")
        T, N = (X.shape[0], X.shape[1]) if self.layout == 0 else (X.shape[1], X.shape[0])
        if self.layout == 0:
            y, state = (T, D, N, hidden), (D, N, hidden)
        else:
            y, state = (N, T, D, hidden), (N, D, hidden)
        self._check_state("initial_h", initial_h, state)
        return (Spec(y, X.dtype),) + (Spec(state, X.dtype),) * (len(self.outputs) - 1)

    def _check_state(self, name: str, spec, state: tuple) -> None:
        """An initial state must have the state's shape (no broadcasting: onnxruntime refuses
        a batch-1 state for a larger batch too); free dims are checked when a batch comes."""
        if spec is not None and (spec.ndim != 3 or any(
                None not in (a, b) and a != b for a, b in zip(spec.shape, state))):
            axes = "(directions, batch, hidden)" if self.layout == 0 else \
                "(batch, directions, hidden)"
            raise ShapeError(f"{self.type}: '{name}' must have shape {format_shape(state)} "
                             f"{axes}, got {format_shape(spec.shape)}")

    @staticmethod
    def _check_batch(X, states) -> None:
        """At run time (``X`` as (T, N, I), states as (D, N, H)): a state's batch is X's."""
        for name, value in states:
            if value is not None and value.shape[1] != X.shape[1]:
                raise ValueError(f"'{name}' holds a batch of {value.shape[1]} but X has "
                                 f"{X.shape[1]}: give one initial state per example")

    # -- forward --------------------------------------------------------------------------
    def forward(self, ctx, X, W, R, B=None, sequence_lens=None, initial_h=None, *rest):
        """Run every direction over time; ``rest`` is lstm's ``initial_c, P``."""
        dtype = X.dtype
        if self.layout == 1:
            X = X.transpose(1, 0, 2)
            initial_h = None if initial_h is None else initial_h.transpose(1, 0, 2)
            rest = tuple(v.transpose(1, 0, 2) if i == 0 and v is not None else v
                         for i, v in enumerate(rest))        # lstm's initial_c
        self._check_batch(X, (("initial_h", initial_h),
                              ("initial_c", rest[0] if rest else None)))
        if not ctx.grad_enabled:
            outs = self._forward_eval(ctx.backend, X, W, R, B, sequence_lens, initial_h, rest)
            if self.layout == 0:        # (its own arrays, contiguous)
                return tuple(outs)
            return (np.ascontiguousarray(outs[0].transpose(2, 0, 1, 3)),) + tuple(
                np.ascontiguousarray(o.transpose(1, 0, 2)) for o in outs[1:])
        T, N, _ = X.shape
        D, H = self.num_directions, R.shape[2]
        gh = self.gates * H
        if B is None:
            B = np.zeros((D, 2 * gh), dtype)
        # the input projection of every step and direction, one matmul: (T, N, D, G*H)
        XW = (X.reshape(T * N, X.shape[2]) @ W.reshape(D * gh, W.shape[2]).T
              ).reshape(T, N, D, gh)
        XW = XW + B[:, :gh]
        masks = self._masks(sequence_lens, T, N, dtype)
        Y = np.zeros((T, D, N, H), dtype)
        finals, tapes = [], []
        for d in range(D):
            h0 = (np.zeros((N, H), dtype) if initial_h is None else initial_h[d]).astype(
                dtype, copy=False)
            state, tape = self._run(d, XW[:, :, d], R[d], B[d, gh:], h0, rest, masks, Y[:, d])
            finals.append(state)
            tapes.append(tape)
        outs = [Y] + [np.stack([f[k] for f in finals]) for k in range(len(self.outputs) - 1)]
        if self.layout == 1:
            outs = [outs[0].transpose(2, 0, 1, 3)] + [o.transpose(1, 0, 2) for o in outs[1:]]
        if ctx.grad_enabled:
            ctx.save(X, W, R, masks, tapes, B.shape, initial_h is not None,
                     [v is not None for v in rest])
        return tuple(np.ascontiguousarray(o) for o in outs)

    def _forward_eval(self, backend, X, W, R, B, sequence_lens, initial_h, rest) -> list:
        """Forward without gradient (layout 0 operands): the input projection in one product,
        then per step the recurrent product in BLAS and the rest of the step in one kernel
        (:mod:`flowgrad.kernels.recurrent`).  Nothing is taped.  Returns ``[Y, Y_h, (Y_c)]``
        in layout 0."""
        kernels = backend.kernels
        dtype = X.dtype
        T, N, I = X.shape
        D, H = self.num_directions, R.shape[2]
        gh = self.gates * H
        XW = X.reshape(T * N, I) @ backend.row_major(W, lambda W: (
            W.reshape(W.shape[0] * W.shape[1], W.shape[2]).T), "recurrent W^T")
        RT = backend.row_major(R, lambda R: R.transpose(0, 2, 1), "recurrent R^T")
        if B is not None:
            XW += B[:, :gh].reshape(1, D * gh)
        XW = XW.reshape(T, N, D, gh)
        lens = np.empty(N, np.int64)
        if sequence_lens is None:
            lens.fill(T)
        else:
            given = np.asarray(sequence_lens).reshape(-1)
            if given.shape[0] != N:
                raise ValueError(f"sequence_lens has {given.shape[0]} entries for a batch "
                                 f"of {N}")
            lens[:] = given
        clip = np.inf if self.clip is None else float(self.clip)
        Y = np.empty((T, D, N, H), dtype)
        finals = []
        for d in range(D):
            xw = XW[:, :, d] if D == 1 else np.ascontiguousarray(XW[:, :, d])
            rb = np.zeros(gh, dtype) if B is None else np.ascontiguousarray(B[d, gh:], dtype)
            h = (np.zeros((N, H), dtype) if initial_h is None
                 else np.array(initial_h[d], dtype, order="C"))
            finals.append(self._eval_direction(kernels, d, xw, RT[d], rb, h, rest, lens, clip,
                                               Y[:, d]))
        if D == 1:          # the states are this call's own arrays: a view, not a copy
            return [Y] + [s[None] for s in finals[0]]
        return [Y] + [np.stack([f[k] for f in finals]) for k in range(len(self.outputs) - 1)]

    @staticmethod
    def _masks(sequence_lens, T, N, dtype):
        """``(T, N, 1)`` 1/0 masks of the real steps, or None when every step is real."""
        if sequence_lens is None:
            return None
        lens = np.asarray(sequence_lens).reshape(-1)
        if lens.shape[0] != N:
            raise ValueError(f"sequence_lens has {lens.shape[0]} entries for a batch of {N}")
        if (lens >= T).all():
            return None
        return (np.arange(T)[:, None] < lens[None, :]).astype(dtype)[:, :, None]

    def _order(self, d: int, T: int):
        reverse = self.direction == "reverse" or d == 1
        return range(T - 1, -1, -1) if reverse else range(T)

    def _clip(self, x):
        return x if self.clip is None else np.clip(x, -self.clip, self.clip)

    def _clip_grad(self, g, x):
        """Zero the gradient where ``clip`` cut the (unclipped) gate input ``x``."""
        return g if self.clip is None else g * (np.abs(x) <= self.clip)

    # -- backward -------------------------------------------------------------------------
    def backward(self, ctx, gY, *g_states):
        X, W, R, masks, tapes, b_shape, has_h0, has_rest = ctx.saved
        dtype = X.dtype
        T, N, _ = X.shape
        D, H = self.num_directions, R.shape[2]
        gh = self.gates * H
        if self.layout == 1:
            gY = None if gY is None else gY.transpose(1, 2, 0, 3)
            g_states = tuple(None if g is None else g.transpose(1, 0, 2) for g in g_states)
        dGx = np.zeros((T, N, D, gh), dtype)     # gradient of the input projection
        dR = np.zeros_like(R)
        dRb = np.zeros((D, gh), dtype)
        d_init = []
        for d in range(D):
            carry = [np.zeros((N, H), dtype) if g is None else g[d].astype(dtype, copy=False)
                     for g in g_states]
            d_init.append(self._run_back(d, tapes[d], None if gY is None else gY[:, d], carry,
                                         R[d], masks, dGx[:, :, d], dR[d], dRb[d]))
        flat = dGx.reshape(T * N, D * gh)
        need = ctx.needs_input_grad
        gX = (flat @ W.reshape(D * gh, W.shape[2])).reshape(X.shape) if need[0] else None
        gW = (flat.T @ X.reshape(T * N, X.shape[2])).reshape(W.shape) if need[1] else None
        gB = None
        if len(need) > 3 and need[3]:
            gB = np.concatenate([dGx.sum(axis=(0, 1)), dRb], axis=1).reshape(b_shape)
        g_h0 = np.stack([s[0] for s in d_init]) if has_h0 else None
        extra = self._rest_grads(d_init, has_rest)
        if self.layout == 1:
            gX = None if gX is None else gX.transpose(1, 0, 2)
            g_h0 = None if g_h0 is None else g_h0.transpose(1, 0, 2)
            extra = [e if (e is None or i != 0) else e.transpose(1, 0, 2)
                     for i, e in enumerate(extra)]
        grads = [gX, gW, dR, gB, None, g_h0] + list(extra)
        grads = [g if (i < len(need) and need[i]) else None for i, g in enumerate(grads)]
        return tuple(None if g is None else np.ascontiguousarray(g, dtype=dtype)
                     for g in grads[:len(need)])

    def _rest_grads(self, d_init, has_rest):
        return []


class RNN(_Recurrent):
    """ONNX RNN: ``h_t = f(x_t W^T + h_{t-1} R^T + Wb + Rb)`` (f: Tanh by default)."""

    type = "rnn"
    inputs = ("X", "W", "R", "B?", "sequence_lens?", "initial_h?")
    outputs = ("Y", "Y_h")
    gates = 1
    default_acts = ("Tanh",)
    attrs = dict(_Recurrent.common_attrs)

    def _run(self, d, XW, R, Rb, h, rest, masks, Y):
        """Forward over time for direction ``d``; writes ``Y`` (T, N, H), returns
        ``((h_T,), tape)``."""
        f, = self._acts[d]
        T = XW.shape[0]
        pres, outs, prevs = np.empty_like(XW), np.empty_like(XW), np.empty_like(XW)
        for t in self._order(d, T):
            prevs[t] = h
            pres[t] = XW[t] + h @ R.T + Rb
            outs[t] = f(self._clip(pres[t]))
            if masks is None:
                h = Y[t] = outs[t]
            else:
                m = masks[t]
                Y[t] = outs[t] * m
                h = Y[t] + h * (1 - m)
        return (h,), (pres, outs, prevs)

    def _eval_direction(self, kernels, d, xw, RT, Rb, h, rest, lens, clip, Y):
        codes, alphas, betas = self._kernel_acts[d]
        hr = np.empty_like(h)
        for t in self._order(d, xw.shape[0]):
            np.matmul(h, RT, out=hr)
            kernels.rnn_step(xw[t], hr, Rb, h, Y[t], lens, t, codes, alphas, betas, clip)
        return (h,)

    def _run_back(self, d, tape, gY, carry, R, masks, dG, dR, dRb):
        """Backward over time for direction ``d``: fills ``dG`` (gradient of the gate inputs),
        adds to ``dR`` and ``dRb``, returns the gradient of the initial state(s)."""
        f, = self._acts[d]
        pres, outs, prevs = tape
        dh, = carry
        for t in reversed(self._order(d, len(pres))):
            g = dh if gY is None else dh + gY[t]
            if masks is not None:
                g, dh = g * masks[t], dh * (1 - masks[t])
            else:
                dh = 0
            dG[t] = self._clip_grad(g * f.grad(self._clip(pres[t]), outs[t]), pres[t])
            dh = dh + dG[t] @ R
        dR += np.tensordot(dG, prevs, axes=([0, 1], [0, 1]))
        dRb += dG.sum(axis=(0, 1))
        return (dh,)


class GRU(_Recurrent):
    """ONNX GRU: gates ``z, r`` (f: Sigmoid), candidate ``g`` (Tanh) of
    ``x W_h^T + (r * h) R_h^T + Rb_h``, or ``x W_h^T + r * (h R_h^T + Rb_h)`` with
    ``linear_before_reset``; ``h_t = (1 - z) * candidate + z * h_{t-1}``."""

    type = "gru"
    inputs = ("X", "W", "R", "B?", "sequence_lens?", "initial_h?")
    outputs = ("Y", "Y_h")
    gates = 3
    default_acts = ("Sigmoid", "Tanh")
    attrs = dict(_Recurrent.common_attrs,
                 linear_before_reset=Attr("bool", False, doc="apply r after the recurrent "
                                                             "product (PyTorch's GRU)"))

    def _run(self, d, XW, R, Rb, h, rest, masks, Y):
        f, g = self._acts[d]
        T, N, gh = XW.shape
        H = gh // 3
        lbr = self.linear_before_reset
        R_zr, R_h = R[:2 * H], R[2 * H:]
        pre = np.empty_like(XW)          # z, r, candidate gate inputs (unclipped)
        act = np.empty_like(XW)          # their activations
        prevs = np.empty((T, N, H), XW.dtype)
        rec = np.empty((T, N, H), XW.dtype)   # h R_h^T + Rb_h (lbr) or r * h (otherwise)
        # the per-step operands as views, sliced once (each step then indexes only time)
        x_zr, x_h = XW[:, :, :2 * H], XW[:, :, 2 * H:]
        pre_zr, pre_h = pre[:, :, :2 * H], pre[:, :, 2 * H:]
        act_zr, act_z, act_r, act_h = (act[:, :, :2 * H], act[:, :, :H], act[:, :, H:2 * H],
                                       act[:, :, 2 * H:])
        RT, R_zrT, R_hT, Rb_zr, Rb_h = R.T, R_zr.T, R_h.T, Rb[:2 * H], Rb[2 * H:]
        clip = self._clip
        for t in self._order(d, T):
            prevs[t] = h
            if lbr:
                hr = h @ RT + Rb
                pre_zr[t] = x_zr[t] + hr[:, :2 * H]
                act_zr[t] = f(clip(pre_zr[t]))
                rec[t] = hr[:, 2 * H:]
                pre_h[t] = x_h[t] + act_r[t] * rec[t]
            else:
                pre_zr[t] = x_zr[t] + h @ R_zrT + Rb_zr
                act_zr[t] = f(clip(pre_zr[t]))
                rec[t] = act_r[t] * h
                pre_h[t] = x_h[t] + rec[t] @ R_hT + Rb_h
            cand = act_h[t] = g(clip(pre_h[t]))
            z = act_z[t]
            new = (1 - z) * cand + z * h
            if masks is None:
                h = Y[t] = new
            else:
                m = masks[t]
                Y[t] = new * m
                h = Y[t] + h * (1 - m)
        return (h,), (pre, act, prevs, rec)

    def _eval_direction(self, kernels, d, xw, RT, Rb, h, rest, lens, clip, Y):
        codes, alphas, betas = self._kernel_acts[d]
        N, H = h.shape
        if self.linear_before_reset:
            hr = np.empty((N, 3 * H), h.dtype)
            plain = self._plain[d]
            for t in self._order(d, xw.shape[0]):
                np.matmul(h, RT, out=hr)
                if plain:
                    kernels.gru_step(xw[t], hr, Rb, h, Y[t], lens, t)
                else:
                    kernels.gru_step_general(xw[t], hr, Rb, h, Y[t], lens, t, codes, alphas,
                                             betas, clip)
        else:
            R_zrT, R_hT = RT[:, :2 * H], RT[:, 2 * H:]
            hr = np.empty((N, 2 * H), h.dtype)
            z, rh, q = (np.empty_like(h) for _ in range(3))
            for t in self._order(d, xw.shape[0]):
                np.matmul(h, R_zrT, out=hr)
                kernels.gru_gates(xw[t], hr, Rb, h, z, rh, codes, alphas, betas, clip)
                np.matmul(rh, R_hT, out=q)
                kernels.gru_candidate(xw[t], q, Rb, z, h, Y[t], lens, t, codes, alphas, betas,
                                      clip)
        return (h,)

    def _run_back(self, d, tape, gY, carry, R, masks, dG, dR, dRb):
        f, g = self._acts[d]
        pre, act, prevs, rec = tape
        T, N, gh = pre.shape
        H = gh // 3
        lbr = self.linear_before_reset
        R_zr, R_h = R[:2 * H], R[2 * H:]
        dRec = np.zeros((T, N, H), pre.dtype)   # gradient of R_h's operand in the product
        dh, = carry
        for t in reversed(self._order(d, T)):
            gh_ = dh if gY is None else dh + gY[t]
            if masks is not None:
                gh_, dh = gh_ * masks[t], dh * (1 - masks[t])
            else:
                dh = 0
            h = prevs[t]
            z, r, cand = act[t, :, :H], act[t, :, H:2 * H], act[t, :, 2 * H:]
            d_cand = self._clip_grad(gh_ * (1 - z) * g.grad(self._clip(pre[t, :, 2 * H:]), cand),
                                     pre[t, :, 2 * H:])
            dz = gh_ * (h - cand)
            dh = dh + gh_ * z
            if lbr:
                dRec[t] = d_cand * r              # gradient of h R_h^T + Rb_h
                dr = d_cand * rec[t]
                dh = dh + dRec[t] @ R_h
            else:
                d_rh = d_cand @ R_h               # gradient of r * h
                dRec[t] = d_cand
                dr = d_rh * h
                dh = dh + d_rh * r
            zr = np.concatenate([dz, dr], axis=1)
            zr = self._clip_grad(zr * f.grad(self._clip(pre[t, :, :2 * H]), act[t, :, :2 * H]),
                                 pre[t, :, :2 * H])
            dG[t, :, :2 * H] = zr
            dG[t, :, 2 * H:] = d_cand
            dh = dh + zr @ R_zr
        dR[:2 * H] += np.tensordot(dG[:, :, :2 * H], prevs, axes=([0, 1], [0, 1]))
        dRb[:2 * H] += dG[:, :, :2 * H].sum(axis=(0, 1))
        if lbr:
            dR[2 * H:] += np.tensordot(dRec, prevs, axes=([0, 1], [0, 1]))
            dRb[2 * H:] += dRec.sum(axis=(0, 1))
        else:
            dR[2 * H:] += np.tensordot(dRec, rec, axes=([0, 1], [0, 1]))
            dRb[2 * H:] += dRec.sum(axis=(0, 1))
        return (dh,)


class LSTM(_Recurrent):
    """ONNX LSTM: gates ``i, o, f`` (f: Sigmoid, with peepholes ``P`` on the cell), cell input
    ``g`` (Tanh), ``c_t = f * c_{t-1} + i * g``, ``h_t = o * h(c_t)`` (h: Tanh);
    ``input_forget`` couples ``f = 1 - i``."""

    type = "lstm"
    inputs = ("X", "W", "R", "B?", "sequence_lens?", "initial_h?", "initial_c?", "P?")
    outputs = ("Y", "Y_h", "Y_c")
    gates = 4
    default_acts = ("Sigmoid", "Tanh", "Tanh")
    attrs = dict(_Recurrent.common_attrs,
                 input_forget=Attr("bool", False, doc="couple the gates: f = 1 - i"))

    def infer(self, X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None,
              P=None):
        out = super().infer(X, W, R, B, sequence_lens, initial_h)
        self._check_state("initial_c", initial_c, out[2].shape)
        hidden = out[1].shape[-1]
        if P is not None and hidden is not None and P.shape[-1] not in (None, 3 * hidden):
            raise ShapeError(f"lstm: 'P' must have shape ({self.num_directions}, {3 * hidden}),"
                             f" got {format_shape(P.shape)}")
        return out

    def _run(self, d, XW, R, Rb, h, rest, masks, Y):
        f, g, hact = self._acts[d]
        initial_c, P = (tuple(rest) + (None, None))[:2]
        T, N, gh = XW.shape
        H = gh // 4
        c = np.zeros((N, H), XW.dtype) if initial_c is None else initial_c[d].astype(
            XW.dtype, copy=False)
        p_i, p_o, p_f = (None,) * 3 if P is None else np.split(P[d].astype(XW.dtype), 3)
        pre = np.empty_like(XW)            # i, o, f, g gate inputs (unclipped), peepholes in
        act = np.empty_like(XW)
        prev_h = np.empty((T, N, H), XW.dtype)
        prev_c = np.empty((T, N, H), XW.dtype)
        cells = np.empty((T, N, H), XW.dtype)
        hc = np.empty((T, N, H), XW.dtype)
        # the per-step operands as views, sliced once (each step then indexes only time)
        pre_i, pre_o, pre_f, pre_g = (pre[:, :, k * H:(k + 1) * H] for k in range(4))
        act_i, act_o, act_f, act_g = (act[:, :, k * H:(k + 1) * H] for k in range(4))
        RT, clip = R.T, self._clip
        for t in self._order(d, T):
            prev_h[t], prev_c[t] = h, c
            pre[t] = XW[t] + h @ RT + Rb
            if P is not None:
                pre_i[t] += p_i * c
                pre_f[t] += p_f * c
            i = act_i[t] = f(clip(pre_i[t]))
            if self.input_forget:
                fg = act_f[t] = 1 - i
            else:
                fg = act_f[t] = f(clip(pre_f[t]))
            gg = act_g[t] = g(clip(pre_g[t]))
            cell = cells[t] = fg * c + i * gg
            if P is not None:
                pre_o[t] += p_o * cell
            o = act_o[t] = f(clip(pre_o[t]))
            hc[t] = hact(cell)
            new = o * hc[t]
            if masks is None:
                h, c = new, cell
                Y[t] = new
            else:
                m = masks[t]
                Y[t] = new * m
                h = Y[t] + h * (1 - m)
                c = cell * m + c * (1 - m)
        return (h, c), (pre, act, prev_h, prev_c, cells, hc, None if P is None else P[d])

    def _eval_direction(self, kernels, d, xw, RT, Rb, h, rest, lens, clip, Y):
        codes, alphas, betas = self._kernel_acts[d]
        initial_c, P = (tuple(rest) + (None, None))[:2]
        N, H = h.shape
        c = (np.zeros((N, H), h.dtype) if initial_c is None
             else np.array(initial_c[d], h.dtype, order="C"))
        peep = P is not None
        input_forget = bool(self.input_forget)
        plain = self._plain[d] and not peep and not input_forget
        if not plain:
            p = np.ascontiguousarray(P[d], h.dtype) if peep else np.zeros(3 * H, h.dtype)
        hr = np.empty((N, 4 * H), h.dtype)
        for t in self._order(d, xw.shape[0]):
            np.matmul(h, RT, out=hr)
            if plain:
                kernels.lstm_step(xw[t], hr, Rb, h, c, Y[t], lens, t)
            else:
                kernels.lstm_step_general(xw[t], hr, Rb, p, h, c, Y[t], lens, t, codes, alphas,
                                          betas, clip, input_forget, peep)
        return (h, c)

    def _run_back(self, d, tape, gY, carry, R, masks, dG, dR, dRb):
        f, g, hact = self._acts[d]
        pre, act, prev_h, prev_c, cells, hc, P = tape
        T, N, gh = pre.shape
        H = gh // 4
        peep = P is not None
        if peep:
            p_i, p_o, p_f = np.split(P.astype(pre.dtype), 3)
            dP = np.zeros((3, H), pre.dtype)
        dh, dc = carry
        for t in reversed(self._order(d, T)):
            gh_ = dh if gY is None else dh + gY[t]
            gc = dc
            if masks is not None:
                m = masks[t]
                gh_, gc, dh, dc = gh_ * m, gc * m, dh * (1 - m), dc * (1 - m)
            else:
                dh = dc = 0
            i, o, fg, gg = (act[t, :, k * H:(k + 1) * H] for k in range(4))
            c_prev, cell = prev_c[t], cells[t]
            do = self._clip_grad(gh_ * hc[t] * f.grad(self._clip(pre[t, :, H:2 * H]), o),
                                 pre[t, :, H:2 * H])
            gcell = gc + gh_ * o * hact.grad(cell, hc[t])
            if peep:
                gcell = gcell + do * p_o
            di = gcell * gg
            dgg = self._clip_grad(gcell * i * g.grad(self._clip(pre[t, :, 3 * H:]), gg),
                                  pre[t, :, 3 * H:])
            dfg = gcell * c_prev
            dc = dc + gcell * fg
            if self.input_forget:
                di = di - dfg
                dfg = np.zeros_like(dfg)
            else:
                dfg = self._clip_grad(dfg * f.grad(self._clip(pre[t, :, 2 * H:3 * H]), fg),
                                      pre[t, :, 2 * H:3 * H])
            di = self._clip_grad(di * f.grad(self._clip(pre[t, :, :H]), i), pre[t, :, :H])
            if peep:
                dc = dc + di * p_i + dfg * p_f
                dP[0] += (di * c_prev).sum(axis=0)
                dP[1] += (do * cell).sum(axis=0)
                dP[2] += (dfg * c_prev).sum(axis=0)
            dG[t] = np.concatenate([di, do, dfg, dgg], axis=1)
            dh = dh + dG[t] @ R
        dR += np.tensordot(dG, prev_h, axes=([0, 1], [0, 1]))
        dRb += dG.sum(axis=(0, 1))
        return (dh, dc, dP.reshape(-1) if peep else None)

    def _rest_grads(self, d_init, has_rest):
        has_c, has_p = (list(has_rest) + [False, False])[:2]
        g_c = np.stack([s[1] for s in d_init]) if has_c else None
        g_p = np.stack([s[2] for s in d_init]) if has_p else None
        return [g_c, g_p]
