"""Affine and matrix-product ops: ``dense`` (x @ W + b) and broadcasting, batched ``matmul``."""
from __future__ import annotations

import numpy as np

from ..op import Op, ShapeError, Spec, broadcast_shapes, format_shape, prod, result_dtype, \
    unbroadcast


class Dense(Op):
    """y = x @ W + b, with W of shape (in, out); x may have any number of leading axes."""

    type = "dense"
    inputs = ("x", "W", "b?")
    rowwise = True
    channel_weights = {"W": 1, "b": 0}
    channel_axis = -1

    def infer(self, x, W, b):
        if W.ndim != 2 or x.ndim < 1:
            raise ShapeError(f"dense needs x[..., in] and W[in, out], got x {format_shape(x.shape)}"
                             f" and W {format_shape(W.shape)}")
        if None not in (x.shape[-1], W.shape[0]) and x.shape[-1] != W.shape[0]:
            raise ShapeError(f"x has {x.shape[-1]} features but W expects {W.shape[0]} "
                             f"(x {format_shape(x.shape)}, W {format_shape(W.shape)})")
        if b is not None and b.shape not in ((W.shape[1],), (1, W.shape[1])) and None not in b.shape:
            raise ShapeError(f"bias shape {format_shape(b.shape)} does not match W's "
                             f"{W.shape[1]} outputs")
        specs = (x, W) if b is None else (x, W, b)
        return (Spec(x.shape[:-1] + (W.shape[1],), result_dtype(*specs)),)

    def forward(self, ctx, x, W, b):
        # one 2-d product over all leading axes: BLAS runs (N*T, in) @ (in, out) faster than
        # numpy's batched loop of (T, in) @ (in, out); the backend's, which the threads
        # share when it is large (a transformer's projections: BLAS keeps to one thread in a
        # plan's run)
        y = ctx.backend.empty(x.shape[:-1] + W.shape[1:], np.result_type(x, W))
        ctx.backend.product(x.reshape(-1, x.shape[-1]), W, y.reshape(-1, W.shape[1]))
        if b is not None:
            y += b
        ctx.save(x, W, None if b is None else b.shape)
        return (y,)

    def backward(self, ctx, gy):
        x, W, b_shape = ctx.saved
        need_x, need_W, need_b = ctx.needs_input_grad
        gx = None
        product = ctx.backend.product       # (as forward's: the threads share large ones)
        g2 = gy.reshape(-1, gy.shape[-1])
        if need_x:
            gx = ctx.backend.empty(gy.shape[:-1] + W.shape[:1], np.result_type(gy, W))
            product(g2, W.T, gx.reshape(-1, W.shape[0]))
        gW = gb = None
        if need_W:
            x2 = x.reshape(-1, x.shape[-1])
            gW = product(x2.T, g2, np.empty(W.shape, np.result_type(x, gy)))
        if need_b:
            gb = g2.sum(axis=0).reshape(b_shape)      # (out,) or (1, out)
        return gx, gW, gb


class MatMul(Op):
    """numpy's ``a @ b``: batched over leading axes, which broadcast; 1-d operands as numpy does."""

    type = "matmul"
    inputs = ("a", "b")

    def infer(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ShapeError("matmul needs operands with at least one axis")
        ka = a.shape[-1]
        kb = b.shape[-2] if b.ndim > 1 else b.shape[0]
        if None not in (ka, kb) and ka != kb:
            raise ShapeError(f"matmul inner dimensions differ: {format_shape(a.shape)} @ "
                             f"{format_shape(b.shape)}")
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
        rows = a.shape[-2:-1] if a.ndim > 1 else ()
        cols = b.shape[-1:] if b.ndim > 1 else ()
        return (Spec(batch + rows + cols, result_dtype(a, b)),)

    def forward(self, ctx, a, b):
        ctx.save(a, b)
        if a.ndim >= 2 and b.ndim == 2:     # one 2-d product, as dense computes it
            y = ctx.backend.empty(a.shape[:-1] + b.shape[1:], np.result_type(a, b))
            ctx.backend.product(a.reshape(-1, a.shape[-1]), b, y.reshape(-1, b.shape[1]))
            return (y,)
        if a.ndim > 2 and b.ndim > 2 and a.shape[0] == b.shape[0] > 1:
            # a batch of products (attention's scores and context), each matrix computed
            # alone: the threads share parts of the first axis (bits unchanged)
            y = ctx.backend.empty(broadcast_shapes(a.shape[:-2], b.shape[:-2])
                                  + (a.shape[-2], b.shape[-1]), np.result_type(a, b))
            ctx.backend.batch(a.shape[0], prod(y.shape[1:]) * a.shape[-1] // 8,
                              lambda start, stop: np.matmul(a[start:stop], b[start:stop],
                                                            out=y[start:stop]))
            return (y,)
        return (a @ b,)

    def backward(self, ctx, gy):
        a, b = ctx.saved
        need_a, need_b = ctx.needs_input_grad
        if a.ndim >= 2 and b.ndim == 2:                  # as forward: 2-d products, as dense's
            g2 = gy.reshape(-1, gy.shape[-1])
            product = ctx.backend.product
            return (product(g2, b.T, np.empty(g2.shape[:1] + b.shape[:1], np.result_type(gy, b))
                            ).reshape(a.shape) if need_a else None,
                    product(a.reshape(-1, a.shape[-1]).T, g2,
                            np.empty(b.shape, np.result_type(a, gy))) if need_b else None)
        if a.ndim == 1 and b.ndim == 1:                  # a dot product: gy is a scalar
            return (gy * b if need_a else None), (gy * a if need_b else None)
        a2 = a[None, :] if a.ndim == 1 else a           # promote 1-d operands as numpy does
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = gy
        if a.ndim == 1:
            g2 = np.expand_dims(g2, -2)
        if b.ndim == 1:
            g2 = np.expand_dims(g2, -1)
        ga = gb = None
        if need_a:
            ga = unbroadcast(g2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if need_b:
            gb = unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape)
        return ga, gb
