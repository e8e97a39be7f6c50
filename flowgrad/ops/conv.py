"""Convolutions in the ONNX layout: ``conv`` and ``conv_transpose`` over 1, 2 or 3 spatial axes.

Layouts follow ONNX so that imported models map one to one: inputs are ``(N, C, *spatial)``,
conv weights ``(out, in / group, *kernel)``, conv_transpose weights ``(in, out / group, *kernel)``,
pads are all begins then all ends.

Both ops are one im2col and one matrix product per batch chunk (see :mod:`._conv_util`); the
unfolded chunk is channel-major, ``(C * taps, n * positions)`` per group, so a whole chunk —
forward, weight gradient or input gradient — is a single BLAS call.  The unfolding (im2col) and
its adjoint (col2im) are compiled kernels reached through ``ctx.backend.kernels``
(:mod:`flowgrad.kernels.conv`).  The two ops are adjoint: conv's input gradient is a transposed
convolution of its output gradient (matrix product then col2im), and conv_transpose's forward is
exactly that, while its input gradient is a convolution (im2col then matrix product).  Every
weight gradient is one more matrix product against the same unfolded buffer.

Depthwise convolutions (one input channel per group) skip the unfolding: the direct kernels
compute them, forward and both gradients (the forward on zero-padded planes split by stride
phase, ``conv_planes``, or channels last on small planes, ``conv_depthwise``:
:meth:`Conv.channels_last`); ``conv_planes`` also computes the forward of a conv with at most
:data:`DIRECT_CHANNELS` input channels per group (see :meth:`Conv.direct_forward`).  1×1,
stride-1, unpadded convs are products on the input as it lies.
"""
from __future__ import annotations

import threading

import numpy as np

from ..errors import AttrError
from ..op import Attr, Op, ShapeError, Spec, format_shape, prod, result_dtype
from ._conv_util import (WINDOW_ATTRS, Geometry, as5d, as5d_shape, check_window_attrs, chunks,
                         compute_dtype, WindowUnfold, geometry, scratch, spatial_check, unfolder)
from ._recipes import KeepsRecipes


#: input channels per group up to which a conv runs its forward direct (see
#: :meth:`Conv.direct_forward`); measured (then on conv_direct's wide planes), 1 thread:
#: LeNet's 1→16 5×5 2.1 ms direct vs 2.8 unfolded, ResNet's 3→16 3×3 1.6 vs 1.9, 4→16 2.05
#: vs 2.2 (about even)
DIRECT_CHANNELS = 3

#: widest window for which a *strided* conv with few input channels runs its forward direct
#: (:meth:`Conv.direct_forward`): ``conv_planes`` adds three or five taps a pass, wider
#: windows one (a 7×7 stem, 3→64, stays a BLAS product)
DIRECT_STRIDED_WIDTH = 5


#: output positions up to which a depthwise forward runs channels last (``conv_depthwise``)
#: rather than on phase planes (``conv_planes``); see :meth:`Conv.channels_last`
DEPTHWISE_CHANNELS_LAST = 64


def _bias_shape(nd: int) -> tuple[int, ...]:
    return (1, -1) + (1,) * nd


def _add_bias(kernels, y: np.ndarray, b: np.ndarray) -> None:
    """``y`` (n, O, *spatial) += ``b`` per channel, in place: the compiled loop
    (``add_channel_bias``; numpy's broadcast add pays a short inner loop per row: a pointwise
    conv's 200x192 output 9.8 -> 2.2 us) when ``y`` is contiguous and of ``b``'s dtype, else
    numpy's add (a float16 output)."""
    if y.dtype == b.dtype and y.flags.c_contiguous:
        kernels.add_channel_bias(y.reshape(y.shape[0], y.shape[1], -1), b)
    else:
        y += b.reshape(_bias_shape(y.ndim - 2))


class _ConvBase(KeepsRecipes, Op):
    rowwise = True
    attrs = {**WINDOW_ATTRS,
             "group": Attr("int", 1, doc="channel groups; group = channels is depthwise")}
    # which weight axis counts output channels / group, and input channels / group
    transposed = False

    def check(self):
        check_window_attrs(self)
        if self.group < 1:
            raise AttrError(f"{self.type}: 'group' must be >= 1, got {self.group}", attr="group")

    def _kernel(self, W_shape) -> tuple[int, ...]:
        kernel = tuple(W_shape[2:])
        if self.kernel_shape and tuple(self.kernel_shape) != kernel:
            raise ShapeError(f"{self.type}: kernel_shape {list(self.kernel_shape)} does not match "
                             f"the weight's kernel {list(kernel)}")
        return kernel

    def _check_shapes(self, x, W, b):
        nd = spatial_check(self, x, 1, 3)
        if W.ndim != x.ndim:
            raise ShapeError(f"{self.type}: weight must have {x.ndim} axes (out, in/group, "
                             f"*kernel) for input {format_shape(x.shape)}, got "
                             f"{format_shape(W.shape)}")
        channels, group = x.shape[1], self.group
        in_per_group = W.shape[0] if self.transposed else W.shape[1]
        if channels is not None and in_per_group is not None:
            if self.transposed:
                ok = channels == in_per_group and channels % group == 0
            else:
                ok = channels == in_per_group * group
            if not ok:
                raise ShapeError(f"{self.type}: input has {channels} channels but the weight "
                                 f"{format_shape(W.shape)} with group={group} expects "
                                 f"{in_per_group if self.transposed else in_per_group * group}")
        if not self.transposed and W.shape[0] is not None and W.shape[0] % group:
            raise ShapeError(f"{self.type}: {W.shape[0]} output channels do not split into "
                             f"group={group}")
        out_channels = W.shape[0]
        if self.transposed:
            out_channels = None if W.shape[1] is None else W.shape[1] * group
        if b is not None and (b.ndim != 1 or None not in (b.shape[0], out_channels)
                              and b.shape[0] != out_channels):
            raise ShapeError(f"{self.type}: bias must have shape ({out_channels},), got "
                             f"{format_shape(b.shape)}")
        return nd, out_channels


class _Recipe:
    """What :meth:`Conv.forward` works out from the input signature — shapes, dtypes, whether
    there is a bias — and the attributes alone: geometry, strategy, kernel, dtypes, batch
    chunks and the shapes every array is viewed as.  Working it out costs tens of
    microseconds a call (geometry, strategy, dtype promotion, unfolder, chunks, reshapes),
    as much as a small conv's arithmetic: a mobile net at batch 1 runs some sixty convs a
    forward.  Nothing here comes from the *values* of W or b: they are params, which
    optimizers change in place.  Plain attributes, so that an op stays picklable."""

    __slots__ = ("g", "strategy", "unfold", "dtype", "work", "out", "cast", "path", "views",
                 "chunks", "kernel", "args", "no_bias", "in_place", "image_ns")

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, None)


class Conv(_ConvBase):
    """ONNX Conv: ``y[n, o, p] = b[o] + sum_{c in group(o), k} W[o, c, k] x_pad[n, c, s p + d k]``.

    Three strategies (:meth:`strategy`): ``pointwise`` (1×1, stride 1, unpadded: matrix
    products on the input as it lies), ``direct`` (depthwise: the direct-convolution kernels)
    and ``unfold`` (im2col kernel, one BLAS product per batch chunk, col2im kernel).
    """

    type = "conv"
    inputs = ("x", "W", "b?")
    channel_weights = {"W": 0, "b": 0}

    def infer(self, x, W, b=None):
        nd, out_channels = self._check_shapes(x, W, b)
        g = geometry(self, x.shape[2:], self._kernel(W.shape))
        specs = (x, W) if b is None else (x, W, b)
        return (Spec((x.shape[0], out_channels) + g.out, result_dtype(*specs)),)

    def strategy(self, g: Geometry, W_shape) -> str:
        """``pointwise``, ``direct`` (depthwise: one input channel per group) or ``unfold``."""
        if g.taps == 1 and not g.padded and set(g.strides) == {1}:
            return "pointwise"
        if W_shape[1] == 1 and self.group > 1:
            return "direct"
        return "unfold"

    @staticmethod
    def direct_forward(g: Geometry, W_shape) -> bool:
        """Whether an ``unfold`` conv computes its forward with the direct kernel
        (``conv_planes``) all the same: with at most :data:`DIRECT_CHANNELS` input channels per
        group (a network's first layer) the unfolded matrix is a thin ``(C·taps, positions)``
        one and the direct kernel is faster, with unit strides or, strided, with windows at
        most :data:`DIRECT_STRIDED_WIDTH` wide.  Measured, 1 thread, unfolded vs direct: 3→8
        3x3 s2 on 48x192 0.25 vs 0.11 ms, 3→16 on 64x64 0.16 vs 0.063, 48x80 0.13 vs 0.052;
        batch 8, 3→32 on 224x224 14.7 vs 10.8.  Its backward still unfolds: the direct weight
        gradient is 2x slower than BLAS there."""
        if W_shape[1] > DIRECT_CHANNELS:
            return False
        return set(g.strides) == {1} or max(W_shape[2:]) <= DIRECT_STRIDED_WIDTH

    @staticmethod
    def channels_last(g: Geometry, W_shape) -> bool:
        """Whether a depthwise forward runs channels last (``conv_depthwise``) rather than on
        phase planes (``conv_planes``): on output planes of at most
        :data:`DEPTHWISE_CHANNELS_LAST` positions, where the planes' staging, padding and crop
        are most of the work and the loop over channels is long.  Measured, batch 1, 1 thread,
        shared machine, channels last vs planes: 5x5 on 384x2x2 0.018 vs 0.12 ms, 192x4x4
        0.017 vs 0.068, 480x3x20 0.11 vs 0.16, 480x6x20 s(2,1) 0.13 vs 0.15; 3x3 96x8x8
        0.018 vs 0.035; larger planes: 5x5 240x12x20 0.26 vs 0.17, 480x6x20 0.24 vs 0.17;
        3x3 128x12x40 s(1,2) 0.21 vs 0.10, 64x24x40 s(2,1) 0.15 vs 0.045.  With the planes'
        bands (kernel rows over padding rows skipped), kernel alone: 5x5 200x2x96 0.069 vs
        0.047, 88x3x96 0.064 vs 0.040; 384x2x2 0.010 vs 0.051, 192x4x4 0.010 vs 0.034."""
        return prod(g.out) <= DEPTHWISE_CHANNELS_LAST

    def forward(self, ctx, x, W, b=None):
        recipe = self._recipes.get((x.shape, x.dtype, W.shape, W.dtype,
                                    None if b is None else b.dtype))
        if recipe is None:
            recipe = self._recipe(x, W, b)
        # first allocation: the plan may place the output (a block of a fused chain)
        y = ctx.backend.empty(recipe.out, recipe.dtype)
        cast_x, cast_W, cast_b = recipe.cast
        if cast_x or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=recipe.work)
        if cast_W or not W.flags.c_contiguous:
            W = np.ascontiguousarray(W, dtype=recipe.work)
        if b is not None and (cast_b or not b.flags.c_contiguous):
            b = np.ascontiguousarray(b, dtype=recipe.work)
        if recipe.path == "pointwise":
            self._pointwise_forward(ctx.backend, recipe, x, W, b, y)
        elif recipe.path == "direct":
            out = y if recipe.in_place else np.empty(recipe.out, recipe.work)
            self._direct_forward(ctx.backend, recipe, x, W, b, out)
            if out is not y:
                y[...] = out
        else:
            self._unfold_forward(ctx.backend, recipe, x, W, b, y)
        if ctx.grad_enabled:
            ctx.save(recipe.strategy, x, W, recipe.g, recipe.unfold)
        return (y,)

    def _recipe(self, x, W, b) -> _Recipe:
        """Work out and keep the :class:`_Recipe` of this input signature (at most
        :data:`~._recipes.RECIPES` kept: past that they are all dropped)."""
        g = geometry(self, x.shape[2:], self._kernel(W.shape))
        r = _Recipe()
        r.g, r.strategy = g, self.strategy(g, W.shape)
        r.dtype = np.result_type(x, W)
        r.work = work = compute_dtype(r.dtype)
        r.out = (x.shape[0], W.shape[0]) + g.out
        r.cast = (x.dtype != work, W.dtype != work, b is not None and b.dtype != work)
        n, channels, out_channels, groups = x.shape[0], x.shape[1], W.shape[0], self.group
        r.path = r.strategy
        if r.strategy == "unfold":      # (backward unfolds even when the forward runs direct)
            r.unfold = unfolder(g, x.shape, out_channels // groups)
        if r.strategy == "pointwise":
            if n == 1 and groups == 1:
                r.views = ((out_channels, channels), (channels, -1), (out_channels, -1))
            else:
                r.views = ((groups, out_channels // groups, channels // groups),
                           (n, groups, channels // groups, -1),
                           (n, groups, out_channels // groups, -1))
                r.chunks = chunks(n, out_channels * prod(g.out))
        elif r.strategy == "direct" or self.direct_forward(g, W.shape):
            r.path = "direct"
            r.kernel = "conv_planes"
            if r.strategy == "direct" and self.channels_last(g, W.shape):
                r.kernel = "conv_depthwise"
            r.in_place = r.dtype == work
            r.views = (as5d_shape(x.shape), as5d_shape(W.shape), as5d_shape(r.out))
            r.args = g.as3d()[1:]
            r.no_bias = np.empty(0, work)
            # an image's cost for the threads' share (~8 multiply-adds a nanosecond)
            r.image_ns = out_channels * channels // groups * g.taps * prod(g.out) // 8
        else:
            cols = channels // groups * g.taps
            r.views = ((groups, out_channels // groups, cols), (groups, cols, -1),
                       (groups, out_channels // groups, -1), _bias_shape(g.nd))
            r.chunks = chunks(n, channels * g.taps * r.unfold.positions)
            r.in_place = type(r.unfold) is WindowUnfold and r.dtype == work
            r.no_bias = np.empty(0, work)
        return self._keep((x.shape, x.dtype, W.shape, W.dtype, None if b is None else b.dtype), r)

    @staticmethod
    def _direct_forward(backend, recipe, x, W, b, out):
        """The direct kernel, on parts of the batch the threads share when there are several
        (:meth:`CPUBackend.batch`: it computes each image alone; LeNet's first layer at batch
        64 is 2 ms of one core)."""
        x5, W5, y5 = recipe.views
        kernel = getattr(backend.kernels, recipe.kernel)
        x5, W5, y5 = x.reshape(x5), W.reshape(W5), out.reshape(y5)
        b = recipe.no_bias if b is None else b
        backend.batch(x.shape[0], recipe.image_ns, lambda start, stop: kernel(
            x5[start:stop], W5, b, y5[start:stop], *recipe.args))

    def _pointwise_forward(self, backend, recipe, x, W, b, y):
        """A 1x1, stride-1, unpadded conv (most of ResNet's) is one matrix product per sample
        and group, ``W (O/G, C/G) @ x (C/G, positions)``: no unfolding, BLAS on the input as it
        lies."""
        if recipe.chunks is None:       # batch 1: one 2-d product, no broadcasting matmul
            W2, x2, y2 = recipe.views
            backend.product(W.reshape(W2), x.reshape(x2), y.reshape(y2))  # (threads share it)
            if b is not None:
                _add_bias(backend.kernels, y, b)
            return
        Wg, x4, y4 = recipe.views
        Wg, x4, y4 = W.reshape(Wg), x.reshape(x4), y.reshape(y4)

        def chunk(i):                   # the bias runs in cache; chunks write disjoint rows
            start, stop = recipe.chunks[i]
            np.matmul(Wg, x4[start:stop], out=y4[start:stop])
            if b is not None:
                _add_bias(backend.kernels, y[start:stop], b)
        backend.parallel(chunk, len(recipe.chunks))

    def _unfold_forward(self, backend, recipe, x, W, b, y):
        """im2col, product and bias per batch chunk; the chunks (disjoint rows of ``y``, their
        unfolded matrices in per-thread scratch) are shared among threads."""
        kernels = backend.kernels
        Wg, cols_shape, image, bias_shape = recipe.views
        Wg = W.reshape(Wg)
        unfold = recipe.unfold
        src = unfold.source(x)
        bias = None if b is None else b.reshape(bias_shape)
        exact = recipe.in_place and y.flags.c_contiguous
        alone = len(recipe.chunks) == 1     # (a batch of 1)

        def chunk(i):
            start, stop = recipe.chunks[i]
            cols = unfold.im2col(kernels, src, start, stop).reshape(cols_shape)
            if exact and stop - start == 1:
                # one image: the product's (O, positions) is the output's own layout
                out = y[start].reshape(image)
                if alone and len(Wg) == 1:      # no chunks to share: the threads share this
                    backend.product(Wg[0], cols[0], out[0])
                else:
                    np.matmul(Wg, cols, out=out)
                if b is not None:
                    _add_bias(kernels, y[start:stop], b)
                return
            values = np.matmul(Wg, cols, out=scratch(
                "values", (Wg.shape[0], Wg.shape[1], cols.shape[2]), cols.dtype))
            values = values.reshape(W.shape[0], stop - start, -1)
            # into the output's layout, the bias added while the chunk is still in cache
            if exact:
                kernels.unfolded_output(values, recipe.no_bias if b is None else b,
                                        y[start:stop].reshape(stop - start, W.shape[0], -1))
            elif bias is None:
                y[start:stop] = unfold.to_output(values.swapaxes(0, 1))
            else:
                np.add(unfold.to_output(values.swapaxes(0, 1)), bias, out=y[start:stop])
        backend.parallel(chunk, len(recipe.chunks))

    def backward(self, ctx, gy):
        strategy, x, W, g, unfold = ctx.saved
        need_x, need_W, need_b = (tuple(ctx.needs_input_grad) + (False,))[:3]
        gy = np.ascontiguousarray(gy, dtype=x.dtype)
        gb = gy.sum(axis=(0,) + tuple(range(2, gy.ndim))) if need_b else None
        if strategy == "pointwise":
            gx, gW = self._pointwise_backward(x, W, gy, need_x, need_W)
        elif strategy == "direct":
            kernels, args = ctx.backend.kernels, g.as3d()[1:]
            gx = gW = None
            if need_x:
                gx = ctx.backend.empty(x.shape, x.dtype)
                kernels.conv_direct_input_grad(as5d(gy), as5d(W), as5d(gx), *args)
            if need_W:
                gW = np.empty(W.shape, W.dtype)
                kernels.conv_direct_weight_grad(as5d(x), as5d(gy), as5d(gW), *args)
        else:
            gx, gW = self._unfold_backward(ctx.backend, unfold, x, W, gy, need_x, need_W)
        return (gx, gW, gb)[:len(ctx.needs_input_grad)]

    def _pointwise_backward(self, x, W, gy, need_x, need_W):
        n, channels, groups = x.shape[0], x.shape[1], self.group
        Wg = W.reshape(groups, W.shape[0] // groups, channels // groups)
        gy4 = gy.reshape(n, groups, W.shape[0] // groups, -1)
        gx = np.matmul(Wg.transpose(0, 2, 1), gy4).reshape(x.shape) if need_x else None
        # one GEMM per sample against the untransposed input, then a sum of (O, C) matrices
        gW = np.matmul(gy4, x.reshape(n, groups, channels // groups, -1).transpose(0, 1, 3, 2)) \
            .sum(axis=0).reshape(W.shape) if need_W else None
        return gx, gW

    def _unfold_backward(self, backend, unfold, x, W, gy, need_x, need_W):
        """Per batch chunk: im2col again and the chunk's weight-gradient product, and the
        input gradient's product and col2im (disjoint rows of it).  The chunks are shared
        among threads; their weight-gradient products are added in chunk order, as one thread
        adds them, whichever thread finishes first (same bits at any thread count)."""
        kernels = backend.kernels
        n, channels, groups = x.shape[0], x.shape[1], self.group
        Wg = W.reshape(groups, W.shape[0] // groups, -1)
        src = unfold.source(x)
        gsrc = unfold.grad_buffer(backend.empty, x.dtype) if need_x else None
        WgT = Wg.transpose(0, 2, 1)
        bounds = chunks(n, channels * unfold.g.taps * unfold.positions)
        gWt = np.empty((groups, Wg.shape[2], Wg.shape[1]), x.dtype) if need_W else None
        order = _InOrder(gWt)

        exact = type(unfold) is WindowUnfold

        def chunk(i):
            start, stop = bounds[i]
            if exact and stop - start == 1:     # one image: gy is already (G, O/G, positions)
                gyg = gy[start].reshape(Wg.shape[:2] + (-1,))
            else:
                gyg = _gather_groups(unfold.from_output(gy, start, stop), 0, stop - start, groups)
            if need_W:
                # rebuilt rather than kept from forward: a chunk is cache-sized and rebuilding
                # it costs less than the page faults of keeping every chunk alive
                cols = unfold.im2col(kernels, src, start, stop).reshape(groups, Wg.shape[2], -1)
                order.add(i, np.matmul(cols, gyg.transpose(0, 2, 1),   # (W-grad)^T: BLAS-faster
                                       out=scratch("part", gWt.shape, gWt.dtype)))
            if need_x:
                gcols = np.matmul(WgT, gyg, out=scratch("gcols", (groups,) + WgT.shape[1:2]
                                                        + gyg.shape[2:], x.dtype))
                unfold.col2im(kernels, gsrc, gcols, start, stop)
        backend.parallel(chunk, len(bounds))
        gW = gWt.transpose(0, 2, 1).reshape(W.shape) if need_W else None
        gx = unfold.input_grad(gsrc) if need_x else None
        return gx, gW


class _InOrder:
    """The sum of parts numbered 0, 1, 2, ... into ``total``, added in that order whatever
    order they arrive in (from the threads sharing a conv's batch chunks): the first part is
    copied in, each next one added; a part that arrives early is kept (copied: it may lie in
    its thread's scratch) until those before it are in."""

    def __init__(self, total):
        self.total, self.next, self.early = total, 0, {}
        self.lock = threading.Lock()

    def add(self, i: int, part: np.ndarray) -> None:
        with self.lock:
            if i != self.next:
                self.early[i] = part.copy()
                return
            while part is not None:
                if self.next == 0:
                    self.total[...] = part
                else:
                    self.total += part
                self.next += 1
                part = self.early.pop(self.next, None)


class ConvTranspose(_ConvBase):
    """ONNX ConvTranspose: the adjoint of conv (scatter each input pixel through the kernel).

    Output size per axis: ``stride * (in - 1) + output_padding + dilation * (k - 1) + 1 - pads``;
    ``output_shape`` (or auto_pad SAME_*, giving ``in * stride``) instead fixes the output size
    and derives the pads, the odd one at the end for SAME_UPPER and at the beginning otherwise
    (the ONNX rule, which onnxruntime follows).  An ``output_shape`` beyond what the input
    reaches gives negative pads (floor division, as ONNX's reference computes them): those
    output cells receive no input and hold zeros (plus the bias).

    Forward: one product ``Wᵀ x`` per batch chunk, then col2im; when the windows tile the
    output (stride = kernel, no padding, dilation or margin: a 2x2 stride-2 upsampling) every
    output cell is one value of the product, placed with the bias by ``unfolded_pixels``
    (PP-OCR det's 24 -> 24 channels on 16x16: 210 -> 81 us a forward, onnxruntime 68).
    """

    type = "conv_transpose"
    inputs = ("x", "W", "b?")
    attrs = {**_ConvBase.attrs,
             "output_padding": Attr("ints", (), doc="extra size added at the end of each axis"),
             "output_shape": Attr("ints", (), doc="spatial output size (overrides pads)")}
    transposed = True

    def check(self):
        super().check()
        if any(p < 0 for p in self.output_padding):
            raise AttrError("conv_transpose: 'output_padding' must be >= 0", attr="output_padding")

    def _geometry(self, in_sizes, kernel) -> tuple[Geometry, tuple]:
        """The geometry of the *adjoint* conv: from this op's output back to its input."""
        nd = len(in_sizes)
        strides = tuple(self.strides) or (1,) * nd
        dilations = tuple(self.dilations) or (1,) * nd
        extra = tuple(self.output_padding) or (0,) * nd
        for name, v in (("strides", strides), ("dilations", dilations),
                        ("output_padding", extra)):
            if len(v) != nd:
                raise ShapeError(f"conv_transpose: '{name}' has {len(v)} entries but the input "
                                 f"has {nd} spatial axes")
        if any(e >= max(s, d) for e, s, d in zip(extra, strides, dilations)):
            raise ShapeError(f"conv_transpose: output_padding {list(extra)} must be smaller "
                             f"than the stride or dilation")
        pads = tuple(self.pads) or (0,) * (2 * nd)
        if len(pads) != 2 * nd:
            raise ShapeError(f"conv_transpose: 'pads' needs {2 * nd} entries, got {list(pads)}")
        begin, end = list(pads[:nd]), list(pads[nd:])
        if self.output_shape or self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            shape = tuple(self.output_shape)[-nd:] if self.output_shape else tuple(
                None if n is None else n * s for n, s in zip(in_sizes, strides))
            if len(shape) != nd:
                raise ShapeError(f"conv_transpose: 'output_shape' needs {nd} spatial sizes")
            for i, (n, k, s, d, e) in enumerate(zip(in_sizes, kernel, strides, dilations, extra)):
                if n is None:
                    continue
                total = s * (n - 1) + e + (k - 1) * d + 1 - shape[i]
                small, big = total // 2, total - total // 2
                begin[i], end[i] = (small, big) if self.auto_pad == "SAME_UPPER" else (big, small)
        elif self.auto_pad == "VALID":
            begin, end = [0] * nd, [0] * nd
        full = [None if n is None else s * (n - 1) + (k - 1) * d + 1 + e
                for n, k, s, d, e in zip(in_sizes, kernel, strides, dilations, extra)]
        out = tuple(None if f is None else f - b - e for f, b, e in zip(full, begin, end))
        if any(o is not None and o < 1 for o in out):
            raise ShapeError(f"conv_transpose: pads {list(begin) + list(end)} leave no output")
        # negative pads (an output_shape past the input's reach) are a zero margin added after
        # the computation; the computation itself crops by the non-negative part
        margin = tuple((max(0, -b), max(0, -e)) for b, e in zip(begin, end))
        begin, end = [max(0, b) for b in begin], [max(0, e) for e in end]
        # the adjoint conv reads a buffer padded by (begin, end + output_padding)
        return Geometry(tuple(kernel), strides, dilations, tuple(begin),
                        tuple(b + e for b, e in zip(end, extra)), extra,
                        tuple(in_sizes)), out, margin

    def infer(self, x, W, b=None):
        nd, out_channels = self._check_shapes(x, W, b)
        _, out, _ = self._geometry(x.shape[2:], self._kernel(W.shape))
        specs = (x, W) if b is None else (x, W, b)
        return (Spec((x.shape[0], out_channels) + out, result_dtype(*specs)),)

    def _recipe(self, x_shape, W_shape) -> tuple:
        """``(geometry, output sizes, margin, computed core, unfolder, pixels)`` of an input
        signature, kept (at most :data:`~._recipes.RECIPES`) as conv keeps its recipes: resolving the
        adjoint geometry costs ~15 us a call.  ``pixels``: the windows tile the output without
        overlap, padding or margin (stride = kernel, no dilation), so each output cell is one
        unfolded value (:func:`~flowgrad.kernels.conv.unfolded_pixels`)."""
        g, out, margin = self._geometry(x_shape[2:], self._kernel(W_shape))
        core = tuple(o - b - e for o, (b, e) in zip(out, margin))     # the computed core
        unfold = WindowUnfold(g, (x_shape[0], W_shape[1] * self.group) + core)
        pixels = (tuple(g.strides) == tuple(g.kernel) and set(g.dilations) == {1}
                  and not any(g.begin) and not any(g.end) and core == out)
        return self._keep((x_shape, W_shape), (g, out, margin, core, unfold, pixels))

    def forward(self, ctx, x, W, b=None):
        recipe = self._recipes.get((x.shape, W.shape))
        if recipe is None:
            recipe = self._recipe(x.shape, W.shape)
        g, out, margin, core, unfold, pixels = recipe
        n, channels, groups = x.shape[0], x.shape[1], self.group
        out_channels = W.shape[1] * groups
        dtype = np.result_type(x, W)
        marginal = any(b or e for b, e in margin)
        y = ctx.backend.empty((n, out_channels) + out, dtype)     # first: the plan may place it
        work = compute_dtype(dtype)
        x = np.ascontiguousarray(x, dtype=work)
        W = np.ascontiguousarray(W, dtype=work)
        yc = y if not marginal and y.dtype == work else np.empty((n, out_channels) + core, work)
        WgT = W.reshape(groups, channels // groups, -1).transpose(0, 2, 1)
        gsrc = as5d(yc)
        kernels = ctx.backend.kernels
        bias = None
        if pixels:      # the bias goes in with the unfolded values, in one pass
            bias = np.empty(0, work) if b is None else np.ascontiguousarray(b, dtype=work)

        for start, stop in chunks(n, out_channels * g.taps * prod(g.out)):
            if groups == 1 and stop - start == 1:   # one image is already (C, positions)
                xg = x[start].reshape(1, channels, -1)
            else:
                xg = _gather_groups(x, start, stop, groups)
            cols = np.matmul(WgT, xg, out=scratch("gcols", (groups, WgT.shape[1], (stop - start)
                                                            * prod(g.out)), work))
            if pixels:
                kernels.unfolded_pixels(cols.reshape((out_channels, g.taps, stop - start)
                                                     + g.out3), bias, gsrc[start:stop],
                                        g.as3d()[0])
            else:
                unfold.col2im(kernels, gsrc, cols, start, stop)
        if b is not None and not pixels:
            _add_bias(kernels, yc, np.asarray(b, dtype=work))
        if marginal:            # the cells no input reaches: zeros, plus the bias
            y[...] = 0 if b is None else np.asarray(b).reshape(_bias_shape(g.nd))
            y[(slice(None), slice(None)) + tuple(
                slice(b_, o - e) for o, (b_, e) in zip(out, margin))] = yc
        elif yc is not y:
            y[...] = yc
        ctx.save(x, W, unfold, margin)
        return (y,)

    def backward(self, ctx, gy):
        x, W, unfold, margin = ctx.saved
        gb = gy.sum(axis=(0,) + tuple(range(2, gy.ndim))) \
            if (tuple(ctx.needs_input_grad) + (False,))[2] else None
        if any(b or e for b, e in margin):      # the zero margin takes no part in the result
            gy = gy[(slice(None), slice(None)) + tuple(
                slice(b, gy.shape[2 + i] - e) for i, (b, e) in enumerate(margin))]
        need_x, need_W = (tuple(ctx.needs_input_grad) + (False,))[:2]
        n, channels, groups = x.shape[0], x.shape[1], self.group
        Wg = W.reshape(groups, channels // groups, -1)
        src = unfold.source(np.asarray(gy, dtype=x.dtype))
        gx = ctx.backend.empty(x.shape, x.dtype) if need_x else None
        gWt = None

        for start, stop in chunks(n, gy.shape[1] * unfold.g.taps * unfold.positions):
            cols = unfold.im2col(ctx.backend.kernels, src, start, stop).reshape(
                groups, Wg.shape[2], -1)
            if need_x:
                _scatter_groups(np.matmul(Wg, cols), gx[start:stop])
            if need_W:
                xg = _gather_groups(x, start, stop, groups)
                part = np.matmul(cols, xg.transpose(0, 2, 1))      # (W-grad)^T: BLAS-faster
                gWt = part if gWt is None else np.add(gWt, part, out=gWt)
        gW = gWt.transpose(0, 2, 1).reshape(W.shape) if need_W else None
        return (gx, gW, gb)[:len(ctx.needs_input_grad)]


def _gather_groups(a: np.ndarray, start: int, stop: int, groups: int) -> np.ndarray:
    """Batch rows ``start:stop`` of (N, C, *spatial) as (groups, C / groups, n * positions)."""
    part = a[start:stop]
    n, channels = part.shape[:2]
    grouped = part.reshape(n, groups, channels // groups, -1).transpose(1, 2, 0, 3)
    out = scratch("grouped", grouped.shape, grouped.dtype)
    np.copyto(out, grouped)
    return out.reshape(groups, channels // groups, -1)


def _scatter_groups(values: np.ndarray, target: np.ndarray) -> None:
    """Write (groups, C / groups, n * positions) into ``target`` (n, C, *spatial)."""
    n, channels = target.shape[:2]
    groups = values.shape[0]
    target.reshape(n, groups, channels // groups, -1)[...] = \
        values.reshape(groups, channels // groups, n, -1).transpose(2, 0, 1, 3)


class Col2Im(Op):
    """ONNX Col2Im: sum sliding blocks back into an image, the adjoint of unfolding (im2col).

    ``x`` is ``(N, C · prod(block_shape), L)``, one column of ``C`` blocks per window position,
    the ``L`` positions in row-major order over the grid the window covers on ``image_shape``
    padded by ``pads``; the output ``(N, C, *image_shape)`` sums every block cell into the
    image cell it lies on (cells falling in the padding are dropped).  It is exactly the
    unfolding's adjoint, so forward runs flowgrad's ``col2im`` kernel and backward its
    ``im2col`` kernel, on up to three spatial axes.
    """

    type = "col2im"
    rowwise = True
    attrs = {"image_shape": Attr("ints", doc="spatial size of the output image"),
             "block_shape": Attr("ints", doc="spatial size of a block (the window)"),
             "strides": Attr("ints", (), doc="step between blocks per axis (default 1)"),
             "dilations": Attr("ints", (), doc="spacing of a block's cells (default 1)"),
             "pads": Attr("ints", (), doc="image padding: all begins, then all ends")}
    auto_pad = "NOTSET"         # for the shared window geometry

    def check(self):
        nd = len(self.image_shape)
        if not 1 <= nd <= 3 or len(self.block_shape) != nd:
            raise AttrError(f"col2im: image_shape {list(self.image_shape)} and block_shape "
                            f"{list(self.block_shape)} need the same number (1 to 3) of axes",
                            attr="block_shape")
        if any(v < 1 for v in self.image_shape + self.block_shape + self.strides
               + self.dilations) or any(p < 0 for p in self.pads):
            raise AttrError("col2im: sizes, strides and dilations must be >= 1 and pads >= 0",
                            attr="pads")

    def _geometry(self):
        return geometry(self, tuple(self.image_shape), tuple(self.block_shape))

    def infer(self, x):
        if x.ndim != 3:
            raise ShapeError(f"col2im needs an input (N, C * block size, positions), got "
                             f"{format_shape(x.shape)}")
        g = self._geometry()
        taps, positions = g.taps, prod(g.out)
        if x.shape[1] is not None and x.shape[1] % taps:
            raise ShapeError(f"col2im: input axis 1 ({x.shape[1]}) must be a multiple of the "
                             f"block size {taps}")
        if x.shape[2] is not None and x.shape[2] != positions:
            raise ShapeError(f"col2im: input axis 2 has {x.shape[2]} positions but the blocks "
                             f"{list(self.block_shape)} cover {positions} ({list(g.out)}) on "
                             f"the padded image")
        channels = None if x.shape[1] is None else x.shape[1] // taps
        return (Spec((x.shape[0], channels) + tuple(self.image_shape), x.dtype),)

    def forward(self, ctx, x):
        g = self._geometry()
        n, channels = x.shape[0], x.shape[1] // g.taps
        work = compute_dtype(x.dtype)
        # (C, taps, n, *grid), the kernel's layout
        cols = np.array(np.asarray(x, dtype=work).reshape((n, channels, g.taps) + g.out3)
                        .transpose(1, 2, 0, 3, 4, 5), order="C")
        y = np.empty((n, channels) + tuple(self.image_shape), work)
        ctx.backend.kernels.col2im(cols, as5d(y), *g.as3d())
        return (y.astype(x.dtype, copy=False),)

    def backward(self, ctx, gy):
        g = self._geometry()
        work = compute_dtype(gy.dtype)
        n, channels = gy.shape[:2]
        cols = np.empty((channels, g.taps, n) + g.out3, work)
        ctx.backend.kernels.im2col(as5d(np.asarray(gy, dtype=work)), cols, *g.as3d())
        return (cols.transpose(2, 0, 1, 3, 4, 5).reshape(n, channels * g.taps, -1)
                .astype(gy.dtype, copy=False),)


class DeformConv(Op):
    """ONNX DeformConv (2-D): a convolution whose every tap reads the input at its own,
    learned, fractional position, by bilinear interpolation, and may be scaled by a mask.

    Tap ``(i, j)`` of output position ``(y, x)`` reads ``X`` at ``(y · s - pad + i · d + Δy,
    x · s - pad + j · d + Δx)``, the offsets ``Δ`` coming from ``offset`` ``(N, offset_group ·
    kh · kw · 2, oh, ow)`` (per offset group of input channels; (Δy, Δx) pairs), and the value
    is multiplied by ``mask`` ``(N, offset_group · kh · kw, oh, ow)`` (default 1).  Points
    outside the image read zeros, as ONNX's reference (GridSample with zero padding,
    ``align_corners``) does.  The sampled columns ``(N, C · taps, positions)`` then meet ``W``
    in one grouped matrix product, as in conv.

    Backward: W, bias and mask from the same product; X by scattering each sample's gradient
    to its four neighbours with their bilinear weights (one ``bincount``); the offsets by the
    derivative of the interpolation along each axis.  The interpolation has kinks where a
    sampling point crosses a whole pixel coordinate; there the gradient is the one-sided
    derivative from above (the floor cell's).
    """

    type = "deform_conv"
    inputs = ("x", "W", "offset", "b?", "mask?")
    attrs = {"kernel_shape": Attr("ints", (), doc="window size (taken from W)"),
             "strides": Attr("ints", (), doc="step between windows (default 1)"),
             "dilations": Attr("ints", (), doc="spacing of the taps (default 1)"),
             "pads": Attr("ints", (), doc="all begins, then all ends (default 0)"),
             "group": Attr("int", 1, doc="channel groups, as in conv"),
             "offset_group": Attr("int", 1, doc="groups of input channels sharing offsets")}
    auto_pad = "NOTSET"         # for the shared window geometry

    def check(self):
        if self.group < 1 or self.offset_group < 1:
            raise AttrError("deform_conv: 'group' and 'offset_group' must be >= 1",
                            attr="group" if self.group < 1 else "offset_group")
        check_window_attrs(self)

    def _geometry(self, x_shape, W_shape):
        kernel = tuple(W_shape[2:])
        if self.kernel_shape and tuple(self.kernel_shape) != kernel:
            raise ShapeError(f"deform_conv: kernel_shape {list(self.kernel_shape)} does not "
                             f"match the weight's kernel {list(kernel)}")
        return geometry(self, tuple(x_shape[2:]), kernel)

    def infer(self, x, W, offset, b=None, mask=None):
        if x.ndim != 4 or W.ndim != 4:
            raise ShapeError(f"deform_conv supports 2-D images: x (N, C, H, W) and W (O, C / "
                             f"group, kh, kw), got {format_shape(x.shape)} and "
                             f"{format_shape(W.shape)}")
        channels, out_channels = x.shape[1], W.shape[0]
        if None not in (channels, W.shape[1]) and channels != W.shape[1] * self.group:
            raise ShapeError(f"deform_conv: input has {channels} channels but the weight "
                             f"{format_shape(W.shape)} with group={self.group} expects "
                             f"{W.shape[1] * self.group}")
        if out_channels is not None and out_channels % self.group:
            raise ShapeError(f"deform_conv: {out_channels} output channels do not split into "
                             f"group={self.group}")
        if channels is not None and channels % self.offset_group:
            raise ShapeError(f"deform_conv: {channels} input channels do not split into "
                             f"offset_group={self.offset_group}")
        g = self._geometry(x.shape, W.shape)
        taps = self.offset_group * g.taps
        for name, v, per in (("offset", offset, 2 * taps), ("mask", mask, taps)):
            if v is None:
                continue
            want = (x.shape[0], per) + g.out
            if v.ndim != 4 or any(None not in (a, w) and a != w for a, w in zip(v.shape, want)):
                raise ShapeError(f"deform_conv: '{name}' must have shape "
                                 f"{format_shape(want)}, got {format_shape(v.shape)}")
        if b is not None and (b.ndim != 1 or None not in (b.shape[0], out_channels)
                              and b.shape[0] != out_channels):
            raise ShapeError(f"deform_conv: bias must have shape ({out_channels},), got "
                             f"{format_shape(b.shape)}")
        return (Spec((x.shape[0], out_channels) + g.out, result_dtype(x, W)),)

    def _sample(self, x, offset, g):
        """Bilinear samples ``(N, og, C/og, taps, P)`` and what backward needs: per corner
        the flat index into a plane, its validity and weight, and the fractional parts."""
        n, channels, height, width = x.shape
        og, (kh, kw), (oh, ow) = self.offset_group, g.kernel, g.out
        (sh, sw), (dh, dw) = g.strides, g.dilations
        off = offset.reshape(n, og, kh * kw, 2, oh * ow)
        taps_y = (np.arange(kh) * dh).repeat(kw)                       # (taps,)
        taps_x = np.tile(np.arange(kw) * dw, kh)
        base_y = (np.arange(oh) * sh - g.begin[0]).repeat(ow)          # (P,)
        base_x = np.tile(np.arange(ow) * sw - g.begin[1], oh)
        py = taps_y[:, None] + base_y[None, :] + off[:, :, :, 0]       # (n, og, taps, P)
        px = taps_x[:, None] + base_x[None, :] + off[:, :, :, 1]
        y0, x0 = np.floor(py), np.floor(px)
        fy, fx = py - y0, px - x0
        y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
        planes = x.reshape(n, og, channels // og, height * width)
        corners = []
        samples = 0
        for cy, cx, wy, wx in ((0, 0, 1 - fy, 1 - fx), (0, 1, 1 - fy, fx),
                               (1, 0, fy, 1 - fx), (1, 1, fy, fx)):
            yy, xx = y0 + cy, x0 + cx
            valid = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
            index = np.where(valid, yy * width + xx, 0)
            values = np.take_along_axis(planes, index.reshape(n, og, 1, -1), axis=3)
            values = values.reshape(n, og, -1, *index.shape[2:]) * valid[:, :, None]
            corners.append((index, valid, values))
            samples = samples + values * (wy * wx)[:, :, None]
        return samples, corners, fy, fx

    def forward(self, ctx, x, W, offset, b=None, mask=None):
        g = self._geometry(x.shape, W.shape)
        work = np.promote_types(np.result_type(x, W, offset), np.float32)
        xs = np.asarray(x, dtype=work)
        n, channels = x.shape[:2]
        samples, corners, fy, fx = self._sample(xs, np.asarray(offset, dtype=work), g)
        taps, positions = g.taps, prod(g.out)
        masked = samples
        if mask is not None:
            m = np.asarray(mask, dtype=work).reshape(n, self.offset_group, 1, taps, positions)
            masked = samples * m
        groups = self.group
        cols = masked.reshape(n, groups, channels // groups * taps, positions)
        Wg = np.asarray(W, dtype=work).reshape(groups, W.shape[0] // groups, -1)
        y = np.matmul(Wg, cols).reshape((n, W.shape[0]) + g.out)
        if b is not None:
            y += np.asarray(b, dtype=work).reshape(1, -1, 1, 1)
        if ctx.grad_enabled:
            ctx.save(g, xs.shape, W, Wg, cols, samples, corners, fy, fx, mask, x.dtype,
                     offset.dtype)
        return (y.astype(np.result_type(x, W), copy=False),)

    def backward(self, ctx, gy):
        (g, x_shape, W, Wg, cols, samples, corners, fy, fx, mask, x_dtype,
         offset_dtype) = ctx.saved
        need = tuple(ctx.needs_input_grad) + (False,) * 5
        n, channels, height, width = x_shape
        og, groups, taps, positions = self.offset_group, self.group, g.taps, prod(g.out)
        work = cols.dtype
        gy3 = np.asarray(gy, dtype=work).reshape(n, groups, -1, positions)
        gx = gW = goffset = gb = gmask = None
        if need[1]:
            gW = np.matmul(gy3, cols.swapaxes(-1, -2)).sum(axis=0).reshape(W.shape).astype(
                W.dtype, copy=False)
        if need[3]:
            gb = gy3.reshape(n, -1, positions).sum(axis=(0, 2)).astype(W.dtype, copy=False)
        if not (need[0] or need[2] or need[4]):
            return (gx, gW, goffset, gb, gmask)[:len(ctx.needs_input_grad)]
        gcols = np.matmul(Wg.swapaxes(-1, -2), gy3)         # (n, groups, C/groups · taps, P)
        gmasked = gcols.reshape(n, og, channels // og, taps, positions)
        if mask is not None and need[4]:
            gmask = (gmasked * samples).sum(axis=2).reshape(mask.shape).astype(mask.dtype,
                                                                               copy=False)
        gsamples = gmasked
        if mask is not None:
            gsamples = gmasked * np.asarray(mask, dtype=work).reshape(n, og, 1, taps, positions)
        if need[0]:
            weights = ((1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx)
            plane = height * width
            first = (np.arange(n * og * (channels // og)) * plane).reshape(
                n, og, channels // og, 1, 1)
            flat, contributions = [], []
            for (index, valid, _), w in zip(corners, weights):
                flat.append((first + index[:, :, None]).reshape(-1))
                contributions.append((gsamples * (w * valid)[:, :, None]).reshape(-1))
            gx = np.bincount(np.concatenate(flat), weights=np.concatenate(contributions),
                             minlength=n * channels * plane).reshape(x_shape).astype(
                                 x_dtype, copy=False)
        if need[2]:
            v00, v01, v10, v11 = (values for _, _, values in corners)
            dy = (1 - fx)[:, :, None] * (v10 - v00) + fx[:, :, None] * (v11 - v01)
            dx = (1 - fy)[:, :, None] * (v01 - v00) + fy[:, :, None] * (v11 - v10)
            goffset = np.stack([(gsamples * dy).sum(axis=2), (gsamples * dx).sum(axis=2)],
                               axis=3)                     # (n, og, taps, 2, P)
            goffset = goffset.reshape(n, -1, *g.out).astype(offset_dtype, copy=False)
        return (gx, gW, goffset, gb, gmask)[:len(ctx.needs_input_grad)]


class CausalConvWithState(Op):
    """ONNX CausalConvWithState (opset 27): a depthwise causal 1-D convolution that carries
    its left context across calls, as Mamba-style and gated-delta models decode token by token.

    ``x`` ``(N, C, L)`` is prefixed by ``past_state`` ``(N, C, k - 1)`` (zeros when absent)
    and convolved, channel by channel, with ``W`` ``(C, 1, k)`` and the optional bias, without
    padding: ``y[n, c, t] = b[c] + sum_j W[c, 0, j] · xp[n, c, t + j]``, then optionally SiLU
    (``activation`` ``silu`` or its alias ``swish``).  ``present_state`` is the last ``k - 1``
    steps of the prefixed input, the next call's ``past_state``.  A loop over the ``k`` taps,
    each one vectorised product; backward runs the same taps in reverse (scatter-adds), and
    ``present_state``'s gradient flows back to the inputs it copies.
    """

    type = "causal_conv_with_state"
    inputs = ("x", "W", "b?", "past_state?")
    outputs = ("y", "present_state")
    attrs = {"activation": Attr("str", "none", choices=("none", "silu", "swish"),
                                doc="applied to the convolution's output")}

    def infer(self, x, W, b=None, past_state=None):
        if x.ndim != 3 or W.ndim != 3 or W.shape[1] not in (1, None):
            raise ShapeError(f"causal_conv_with_state needs x (N, C, L) and W (C, 1, k), got "
                             f"{format_shape(x.shape)} and {format_shape(W.shape)}")
        channels, k = x.shape[1], W.shape[2]
        if None not in (channels, W.shape[0]) and channels != W.shape[0]:
            raise ShapeError(f"causal_conv_with_state: x has {channels} channels but W "
                             f"{format_shape(W.shape)} has {W.shape[0]} (depthwise: one filter "
                             "per channel)")
        if b is not None and (b.ndim != 1 or None not in (b.shape[0], channels)
                              and b.shape[0] != channels):
            raise ShapeError(f"causal_conv_with_state: bias must be ({channels},), got "
                             f"{format_shape(b.shape)}")
        state = (x.shape[0], channels, None if k is None else k - 1)
        if past_state is not None and (past_state.ndim != 3 or any(
                None not in (a, w) and a != w for a, w in zip(past_state.shape[1:], state[1:]))):
            raise ShapeError(f"causal_conv_with_state: past_state must be "
                             f"{format_shape(state)}, got {format_shape(past_state.shape)}")
        return Spec(x.shape, x.dtype), Spec(state, x.dtype)

    def forward(self, ctx, x, W, b=None, past_state=None):
        n, channels, length = x.shape
        k = W.shape[2]
        work = np.promote_types(x.dtype, np.float32)
        padded = np.empty((n, channels, length + k - 1), work)
        padded[:, :, :k - 1] = 0 if past_state is None else past_state
        padded[:, :, k - 1:] = x
        taps = np.asarray(W, dtype=work).reshape(channels, k)
        z = np.zeros((n, channels, length), work)
        for j in range(k):
            z += taps[:, j, None] * padded[:, :, j:j + length]
        if b is not None:
            z += np.asarray(b, dtype=work)[:, None]
        z = z.astype(x.dtype).astype(work, copy=False)     # ONNX rounds the conv first
        sig = None
        y = z
        if self.activation != "none":
            sig = 1.0 / (1.0 + np.exp(-z))
            y = z * sig
        if ctx.grad_enabled:
            ctx.save(padded, taps, z, sig, x.dtype, W.dtype, past_state is not None)
        return (y.astype(x.dtype, copy=False),
                np.ascontiguousarray(padded[:, :, length:], dtype=x.dtype))

    def backward(self, ctx, gy, gpresent=None):
        padded, taps, z, sig, x_dtype, w_dtype, has_past = ctx.saved
        need = tuple(ctx.needs_input_grad) + (False,) * 4
        n, channels, length = z.shape
        k = taps.shape[1]
        work = padded.dtype
        gz = np.zeros(z.shape, work) if gy is None else np.asarray(gy, dtype=work)
        if sig is not None:
            gz = gz * (sig + z * sig * (1 - sig))
        gpadded = np.zeros(padded.shape, work)
        if gpresent is not None:
            gpadded[:, :, length:] += gpresent
        gW = np.empty((channels, k), work) if need[1] else None
        for j in range(k):
            gpadded[:, :, j:j + length] += taps[:, j, None] * gz
            if need[1]:
                gW[:, j] = np.einsum("nct,nct->c", gz, padded[:, :, j:j + length])
        gx = gpadded[:, :, k - 1:].astype(x_dtype) if need[0] else None
        gb = gz.sum(axis=(0, 2)).astype(w_dtype) if need[2] else None
        gpast = gpadded[:, :, :k - 1].astype(x_dtype) if need[3] and has_past else None
        gW = None if gW is None else gW.reshape(channels, 1, k).astype(w_dtype)
        return (gx, gW, gb, gpast)[:len(ctx.needs_input_grad)]
