"""Convolution kernels: unfold (im2col), fold (col2im) and direct convolution, beside their numpy
references.

Layout.  Every kernel works on three spatial axes: ops view a 1-d or 2-d input ``(n, C, W)`` /
``(n, C, H, W)`` as ``(n, C, 1, 1, W)`` / ``(n, C, 1, H, W)`` (a free reshape) and pass 3-tuples
``kernel``, ``strides``, ``dilations`` and ``begin`` (the leading pads; the end pads follow from
the shapes).  The unfolded buffer ``cols`` is ``(C, taps, n, OD, OH, OW)``: per group it is one
``(C/group · taps, n · positions)`` matrix, so a batch chunk is a single BLAS product.

* :func:`im2col` unfolds straight from the *unpadded* input: a window row that falls in the
  padding is written as zeros, a partly padded row gets zeros at its ends, so no padded copy of
  the input is ever made (numpy's path pads a copy, then copies again through a strided view).
  Small output planes are gathered through a table of source cells instead (see
  :data:`TABLE_POSITIONS`).
* :func:`col2im` is its adjoint, as a *gather*: every input row ``(n, c, d, h)`` is built in one
  go from the unfolded rows whose windows reach it, then written once — no zeroed padded buffer,
  no crop, none of numpy's per-tap strided read-modify-write passes over the whole gradient.
  :func:`unfolded_pixels` is col2im for windows that tile the output (stride = kernel, no
  padding: a transposed convolution's upsampling), each output cell one unfolded value plus
  the bias.
* :func:`conv_direct`, :func:`conv_direct_input_grad`, :func:`conv_direct_weight_grad`: a
  convolution as loops of ``row += w · shifted row`` (vectorised along the output row), for
  depthwise convolutions (one input channel per group), where unfold + product would be a
  ``(1, taps) × (taps, positions)`` product per channel — all bookkeeping and no arithmetic.
  The weight gradient accumulates per tap into a row of partial sums (a loop that vectorises
  without reassociation) and sums each row at the end, in a fixed order: deterministic.
* :func:`conv_planes`: :func:`conv_direct`'s forward on zero-padded planes split by stride
  phase, any stride (depthwise convs and first layers); :func:`conv_depthwise`: the depthwise
  forward channels last (small planes).  Both give conv_direct's bits.

The products of the unfolded path stay in BLAS (``np.matmul``).  Kernels take C-contiguous
arrays and write every element of their output (no zeroing needed by the caller).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._jit import jit, kernel

__all__ = ["im2col", "col2im", "unfolded_output", "unfolded_pixels", "add_channel_bias",
           "conv_direct", "conv_depthwise", "conv_planes", "conv_direct_input_grad",
           "conv_direct_weight_grad"]

#: widest output row for which the direct weight gradient stages unit-stride planes wide (see
#: "direct convolution on wide planes"); wider rows run row by row, which measured faster there
#: (depthwise 3x3, batch 8, 1 thread: 112 wide 14.3 ms wide vs 9.8 by rows; 56 wide 12.7 vs
#: 15.9; 14 wide 4.0 vs 12.3).  The forward and input gradient always go wide (1.4-7x faster).
WIDE_WEIGHT_GRAD_MAX = 64

#: output planes of at most this many positions (or, off the contiguous-plane path, rows at
#: most :data:`TABLE_ROW` wide) are unfolded through a table of source cells: one gather loop
#: per channel, where the row-wise copy pays its bookkeeping per window row of 2-8 cells.
#: Measured, batch 1, 1 thread, 3x3 windows, row-wise vs table: 64x4x4 54 vs 15 us, 128x2x2
#: 98 vs 17, 64x8x8 57 vs 36, 480x1x10 (1x3) 130 vs 28, 96x13x13 98 vs 130 (rows win from
#: about 150 positions); strided 192x26x26 s2 (13 wide) 234 vs 150, 16x32x32 s2 25 vs 21.
TABLE_POSITIONS = 128
TABLE_ROW = 16


# -- shared helpers --------------------------------------------------------------------------

@jit
def _u(i):
    """An index as unsigned: numba then skips the negative-index wraparound, whose select in
    every access keeps LLVM from vectorising short row loops (2-3x slower on 14-wide rows)."""
    return np.uint64(i)


@jit
def _span(off, stride, size, count):
    """``(lo, hi)``: the outputs ``o`` in ``[0, count)`` whose cell ``o * stride + off`` lies in
    ``[0, size)``; ``lo == hi`` when none does."""
    lo = 0
    if off < 0:
        lo = (-off + stride - 1) // stride
    last = size - 1 - off
    hi = 0 if last < 0 else last // stride + 1
    if hi > count:
        hi = count
    if lo > hi:
        lo = hi
    return lo, hi


def _padded_view(x, out, kernel, strides, dilations, begin, value=0):
    """numpy: the windows of ``x`` (n, C, D, H, W) padded by ``begin`` (and at the end as far as
    the ``out`` windows reach), as a view (n, C, *out, *kernel)."""
    pads, eff = [(0, 0), (0, 0)], []
    for axis in range(3):
        e = (kernel[axis] - 1) * dilations[axis] + 1
        need = (out[axis] - 1) * strides[axis] + e - (x.shape[2 + axis] + begin[axis])
        pads.append((begin[axis], max(0, need)))
        eff.append(e)
    xp = np.pad(x, pads, constant_values=value)
    view = sliding_window_view(xp, tuple(eff), axis=(2, 3, 4))
    index = (slice(None),) * 2 + tuple(
        slice(0, s * (o - 1) + 1, s) for s, o in zip(strides, out)) + tuple(
        slice(None, None, d) for d in dilations)
    return view[index]


def _cols_of(x, out, kernel, strides, dilations, begin):
    """numpy: the unfolded (C, taps, n, *out) array of ``x``."""
    view = _padded_view(x, out, kernel, strides, dilations, begin)
    n, C = x.shape[:2]
    taps = kernel[0] * kernel[1] * kernel[2]
    return view.transpose(1, 5, 6, 7, 0, 2, 3, 4).reshape((C, taps, n) + tuple(out))


def _fold(cols, shape, kernel, strides, dilations, begin):
    """numpy: the adjoint of :func:`_cols_of`, the sum of each cell's unfolded copies."""
    n, C = shape[:2]
    out = cols.shape[3:]
    full = []
    for axis in range(3):
        reach = (out[axis] - 1) * strides[axis] + (kernel[axis] - 1) * dilations[axis] + 1
        full.append(max(reach, begin[axis] + shape[2 + axis]))
    gp = np.zeros((n, C) + tuple(full), dtype=cols.dtype)
    t = 0
    for kd in range(kernel[0]):
        for kh in range(kernel[1]):
            for kw in range(kernel[2]):
                where = (slice(None), slice(None)) + tuple(
                    slice(k * d, k * d + s * (o - 1) + 1, s) for k, d, s, o in
                    zip((kd, kh, kw), dilations, strides, out))
                gp[where] += cols[:, t].transpose(1, 0, 2, 3, 4)
                t += 1
    return gp[(slice(None), slice(None)) + tuple(
        slice(b, b + size) for b, size in zip(begin, shape[2:]))]


# -- unfold and fold -------------------------------------------------------------------------

def _im2col_reference(x, cols, kernel, strides, dilations, begin):
    cols[...] = _cols_of(x, cols.shape[3:], kernel, strides, dilations, begin)


@kernel(_im2col_reference)
def im2col(x, cols, kernel, strides, dilations, begin):
    """cols[c, tap, i, od, oh, ow] = x[i, c, od·sd + kd·dd − bd, oh·sh + kh·dh − bh,
    ow·sw + kw·dw − bw], zero where that cell is outside ``x`` (the padding)."""
    n, C, D, H, W = x.shape
    OD, OH, OW = cols.shape[3], cols.shape[4], cols.shape[5]
    KD, KH, KW = kernel
    sd, sh, sw = strides
    dd, dh, dw = dilations
    bd, bh, bw = begin
    xf = x.reshape(-1)
    cf = cols.reshape(-1)
    zero = x.dtype.type(0)
    flat = sw == 1 and sh == 1 and OW == W
    if OD * OH * OW <= TABLE_POSITIONS or (not flat and OW <= TABLE_ROW):
        _im2col_table(xf, cf, n, C, D, H, W, OD, OH, OW, kernel, strides, dilations, begin)
        return
    if flat:
        _im2col_planes(xf, cf, n, C, D, H, W, OD, OH, kernel, sd, dilations, begin)
        return
    dst = 0
    for c in range(C):
        for kd in range(KD):
            for kh in range(KH):
                for kw in range(KW):
                    off = kw * dw - bw
                    lo, hi = _span(off, sw, W, OW)
                    for i in range(n):
                        for od in range(OD):
                            z = od * sd + kd * dd - bd
                            for oh in range(OH):
                                y = oh * sh + kh * dh - bh
                                if z < 0 or z >= D or y < 0 or y >= H:
                                    for ow in range(OW):
                                        cf[_u(dst + ow)] = zero
                                    dst += OW
                                    continue
                                src = (((i * C + c) * D + z) * H + y) * W + off
                                for ow in range(lo):
                                    cf[_u(dst + ow)] = zero
                                if sw == 1:
                                    for ow in range(lo, hi):
                                        cf[_u(dst + ow)] = xf[_u(src + ow)]
                                else:
                                    for ow in range(lo, hi):
                                        cf[_u(dst + ow)] = xf[_u(src + ow * sw)]
                                for ow in range(hi, OW):
                                    cf[_u(dst + ow)] = zero
                                dst += OW


@jit
def _plane_staging(H, W, OH, KH, KW, dh, dw, bh, bw):
    """The staging of :func:`_im2col_planes` and :func:`_col2im_planes`: ``(margin, rows,
    y0, y1, keep)`` — how far a tap's columns reach past the plane, the rows staged (input
    rows ``-bh .. rows - bh - 1``), the staged rows ``[y0, y1)`` that are input rows, and per
    tap column the mask of the output cells that read inside the plane (not wrapped around
    from a neighbouring row)."""
    margin = 0
    for kw in range(KW):
        margin = max(margin, abs(kw * dw - bw))
    rows = OH + (KH - 1) * dh
    y0 = min(bh, rows)
    y1 = max(y0, min(rows, H + bh))
    plane = OH * W
    keep = np.empty(KW * plane, dtype=np.bool_)
    for kw in range(KW):
        lo, hi = _span(kw * dw - bw, 1, W, W)
        for oh in range(OH):
            for w in range(W):
                keep[(kw * OH + oh) * W + w] = lo <= w < hi
    return margin, rows, y0, y1, keep


@jit
def _im2col_planes(xf, cf, n, C, D, H, W, OD, OH, kernel, sd, dilations, begin):
    """im2col for unit strides along H and W and an output as wide as the input.  Each input
    plane ``(i, c, z)`` is staged once in a buffer ``W`` wide with the padding rows above and
    below it zeroed; every tap's output plane is then one contiguous range of that buffer,
    shifted by the tap, copied in one loop whose cells that wrapped around from a neighbouring
    row (the padding columns ``[0, lo)`` and ``[hi, W)``) are selected to zero by a mask of
    the tap's column.  One branch-free, vectorised loop per tap and plane, where copying the
    rows of the input plane in place paid bookkeeping per tap and a strided pass zeroing the
    edge columns (LeNet's 16→32 5x5 on 14x14, batch 64: 2.2 -> 0.9 ms a forward)."""
    KD, KH, KW = kernel
    dd, dh, dw = dilations
    bd, bh, bw = begin
    taps = KD * KH * KW
    P = OD * OH * W
    plane = OH * W
    zero = cf.dtype.type(0)
    margin, rows, y0, y1, keep = _plane_staging(H, W, OH, KH, KW, dh, dw, bh, bw)
    # zeros but for the input rows, written for every plane: its pad rows and margins stay 0
    buf = np.zeros(rows * W + 2 * margin, dtype=cf.dtype)
    for c in range(C):
        for i in range(n):
            for od in range(OD):
                for kd in range(KD):
                    z = od * sd + kd * dd - bd
                    t0 = kd * KH * KW
                    if z < 0 or z >= D:
                        for t in range(t0, t0 + KH * KW):
                            dst = ((c * taps + t) * n + i) * P + od * plane
                            for j in range(plane):
                                cf[_u(dst + j)] = zero
                        continue
                    src = (((i * C + c) * D + z) * H + y0 - bh) * W
                    base = margin + y0 * W
                    for j in range((y1 - y0) * W):
                        buf[_u(base + j)] = xf[_u(src + j)]
                    for kh in range(KH):
                        for kw in range(KW):
                            dst = ((c * taps + t0 + kh * KW + kw) * n + i) * P + od * plane
                            at = margin + kh * dh * W + kw * dw - bw
                            mask = kw * plane
                            for j in range(plane):
                                v = buf[_u(at + j)]
                                cf[_u(dst + j)] = v if keep[_u(mask + j)] else zero


@jit
def _im2col_table(xf, cf, n, C, D, H, W, OD, OH, OW, kernel, strides, dilations, begin):
    """im2col through a table: the source cell of every (tap, output position) in a plane, or
    -1 in the padding, computed once; then per channel, tap and image one gather loop over the
    positions."""
    KD, KH, KW = kernel
    sd, sh, sw = strides
    dd, dh, dw = dilations
    bd, bh, bw = begin
    taps = KD * KH * KW
    P = OD * OH * OW
    zero = cf.dtype.type(0)
    cell = np.empty(taps * P, dtype=np.int64)
    k = 0
    for kd in range(KD):
        for kh in range(KH):
            for kw in range(KW):
                for od in range(OD):
                    z = od * sd + kd * dd - bd
                    for oh in range(OH):
                        y = oh * sh + kh * dh - bh
                        for ow in range(OW):
                            u = ow * sw + kw * dw - bw
                            inside = z >= 0 and z < D and y >= 0 and y < H and u >= 0 and u < W
                            cell[k] = (z * H + y) * W + u if inside else -1
                            k += 1
    plane = D * H * W
    for c in range(C):
        for t in range(taps):
            for i in range(n):
                src = (i * C + c) * plane
                dst = ((c * taps + t) * n + i) * P
                for p in range(P):
                    j = cell[t * P + p]
                    cf[_u(dst + p)] = xf[_u(src + j)] if j >= 0 else zero


def _col2im_reference(cols, gx, kernel, strides, dilations, begin):
    gx[...] = _fold(cols, gx.shape, kernel, strides, dilations, begin)


@kernel(_col2im_reference)
def col2im(cols, gx, kernel, strides, dilations, begin):
    """gx[i, c, z, y, x] = Σ of cols[c, tap, i, od, oh, ow] over the windows and taps that read
    that cell (the adjoint of :func:`im2col`): each row of ``gx`` gathered, then written once."""
    n, C, D, H, W = gx.shape
    OD, OH, OW = cols.shape[3], cols.shape[4], cols.shape[5]
    KD, KH, KW = kernel
    sd, sh, sw = strides
    dd, dh, dw = dilations
    bd, bh, bw = begin
    taps = KD * KH * KW
    plane = OD * OH * OW
    cf = cols.reshape(-1)
    gf = gx.reshape(-1)
    acc = np.empty(W, dtype=gx.dtype)
    flat = sw == 1 and sh == 1 and OW == W
    if flat:
        _col2im_planes(cf, gf, n, C, D, H, W, OD, OH, kernel, sd, dilations, begin)
        return
    for c in range(C):           # channel-major like cols: each tap's rows are read in order
        for i in range(n):
            for z in range(D):
                for y in range(H):
                    for w in range(W):
                        acc[w] = 0
                    for kd in range(KD):
                        od = z + bd - kd * dd
                        if od < 0 or od % sd != 0 or od // sd >= OD:
                            continue
                        od //= sd
                        for kh in range(KH):
                            oh = y + bh - kh * dh
                            if oh < 0 or oh % sh != 0 or oh // sh >= OH:
                                continue
                            oh //= sh
                            t = (kd * KH + kh) * KW
                            for kw in range(KW):
                                off = kw * dw - bw
                                lo, hi = _span(off, sw, W, OW)
                                src = (((c * taps + t + kw) * n + i) * plane
                                       + (od * OH + oh) * OW)
                                if sw == 1:
                                    for ow in range(lo, hi):
                                        acc[_u(ow + off)] += cf[_u(src + ow)]
                                else:
                                    for ow in range(lo, hi):
                                        acc[_u(ow * sw + off)] += cf[_u(src + ow)]
                    dst = (((i * C + c) * D + z) * H + y) * W
                    for w in range(W):
                        gf[_u(dst + w)] = acc[w]


@jit
def _col2im_planes(cf, gf, n, C, D, H, W, OD, OH, kernel, sd, dilations, begin):
    """col2im for unit strides along H and W and an output as wide as the input, the adjoint
    of :func:`_im2col_planes`: per input plane ``(i, c, z)`` every tap adds its unfolded
    plane, one contiguous range, into a staging buffer ``W`` wide with room for the padding
    rows, shifted by the tap, its cells that read padding columns selected to zero by the
    tap's column mask; then the input rows are copied out.  Each cell sums its taps in order
    from +0, as the row-wise path does (adding a selected +0 to a sum that started at +0
    changes no bit).  One branch-free, vectorised loop per tap and plane, where adding rows in
    place paid bookkeeping per tap and first zeroed the padding cells of ``cols``."""
    KD, KH, KW = kernel
    dd, dh, dw = dilations
    bd, bh, bw = begin
    taps = KD * KH * KW
    P = OD * OH * W
    plane = OH * W
    zero = gf.dtype.type(0)
    margin, rows, y0, y1, keep = _plane_staging(H, W, OH, KH, KW, dh, dw, bh, bw)
    buf = np.empty(rows * W + 2 * margin, dtype=gf.dtype)
    for c in range(C):
        for i in range(n):
            for z in range(D):
                dst = (((i * C + c) * D + z) * H) * W
                for j in range(buf.size):
                    buf[_u(j)] = zero
                for kd in range(KD):
                    od = z + bd - kd * dd
                    if od < 0 or od % sd != 0 or od // sd >= OD:
                        continue
                    od //= sd
                    for kh in range(KH):
                        for kw in range(KW):
                            t = (kd * KH + kh) * KW + kw
                            src = ((c * taps + t) * n + i) * P + od * plane
                            at = margin + kh * dh * W + kw * dw - bw
                            mask = kw * plane
                            for j in range(plane):
                                v = cf[_u(src + j)]
                                buf[_u(at + j)] += v if keep[_u(mask + j)] else zero
                base = margin + y0 * W
                for j in range((y1 - y0) * W):
                    gf[_u(dst + j)] = buf[_u(base + j)]
                for j in range((y1 - y0) * W, H * W):     # rows no window reaches
                    gf[_u(dst + j)] = zero


# -- direct convolution on wide planes (unit strides) ----------------------------------------
# With unit strides, computing a plane's outputs on a grid as wide as the padded input (the
# extra columns are garbage, dropped) makes every tap one contiguous range of the padded plane:
# ``wide[j] += w · padded[j + offset]`` over the whole plane, a long loop LLVM vectorises, where
# the row loops run 7 or 14 wide on small planes.  Planes are staged in small scratch buffers
# (L1/L2-sized); the extra arithmetic is (padded width) / (output width).

@jit
def _stage(src, start, D, H, W, buf, Dp, Hp, Wp, z0, y0, x0):
    """buf (Dp, Hp, Wp, flat) = zeros, with the (D, H, W) plane at ``src[start:]`` placed at
    (z0, y0, x0) (cells falling outside ``buf`` are dropped)."""
    for j in range(buf.size):
        buf[j] = 0
    for z in range(D):
        bz = z + z0
        if bz < 0 or bz >= Dp:
            continue
        for v in range(H):
            by = v + y0
            if by < 0 or by >= Hp:
                continue
            lo = max(0, -x0)
            hi = min(W, Wp - x0)
            s = start + (z * H + v) * W
            d = (bz * Hp + by) * Wp + x0
            for w in range(lo, hi):
                buf[_u(d + w)] = src[_u(s + w)]


@jit
def _wide_correlate(xp, wf, wstart, flip, KD, KH, KW, dd, dh, dw, Hp, Wp, OD, OH, out, reset,
                    bias):
    """out (OD, Hp, Wp grid, flat) (= bias first if ``reset``) += Σ_taps w · xp shifted by the
    tap, row ranges of ``OH · Wp`` per output depth; ``flip`` mirrors the taps (for the input
    gradient)."""
    span = OH * Wp
    if reset:
        for j in range(out.size):
            out[j] = bias
    t = 0
    for kd in range(KD):
        for kh in range(KH):
            for kw in range(KW):
                w = wf[_u(wstart + (KD * KH * KW - 1 - t if flip else t))]
                off = (kd * dd * Hp + kh * dh) * Wp + kw * dw
                for od in range(OD):
                    base = od * Hp * Wp
                    for j in range(base, base + span):
                        out[_u(j)] += w * xp[_u(j + off)]
                t += 1


@jit
def _crop(out, Hp, Wp, OD, OH, OW, dst, yf):
    """The (OD, OH, OW) corner of the wide grid ``out`` into ``yf[dst:]``."""
    for od in range(OD):
        for oh in range(OH):
            s = (od * Hp + oh) * Wp
            d = dst + (od * OH + oh) * OW
            for ow in range(OW):
                yf[_u(d + ow)] = out[_u(s + ow)]


@jit
def _wide_shapes(OD, OH, OW, KD, KH, KW, dd, dh, dw):
    """(Dp, Hp, Wp): the padded plane the wide grid reads, one spare row for the last taps."""
    return OD + (KD - 1) * dd, OH + (KH - 1) * dh + 1, OW + (KW - 1) * dw


def _unfolded_output_reference(values, b, y):
    out = values.swapaxes(0, 1)
    y[...] = out + b.reshape(1, -1, 1) if b.size else out


@kernel(_unfolded_output_reference)
def unfolded_output(values, b, y):
    """y[i, o, p] = values[o, i, p] + b[o] (no bias when ``b`` is empty): a chunk's product,
    ``(O, n, positions)``, into the output's layout ``(n, O, positions)`` with the bias, one
    contiguous row copy per image and channel.  numpy's ``np.add`` of the swapped view pays its
    strided iteration per row of a few hundred cells: LeNet's conv2, batch 64 in chunks of 3,
    0.21 -> 0.07 ms a forward (1 thread, CPU time, warm; LeNet inference 2 % faster)."""
    O, n, P = values.shape
    vf = values.reshape(-1)
    yf = y.reshape(-1)
    has_bias = b.size > 0
    for o in range(O):
        bias = b[o] if has_bias else vf.dtype.type(0)
        for i in range(n):
            src = (o * n + i) * P
            dst = (i * O + o) * P
            if has_bias:
                for p in range(P):
                    yf[_u(dst + p)] = vf[_u(src + p)] + bias
            else:
                for p in range(P):
                    yf[_u(dst + p)] = vf[_u(src + p)]


def _add_channel_bias_reference(y, b):
    y += b.reshape(1, -1, 1)


@kernel(_add_channel_bias_reference)
def add_channel_bias(y, b):
    """y[i, o, p] += b[o], in place: a product's output ``(n, O, positions)`` gets its bias in
    one contiguous loop per row.  numpy's broadcast add runs its inner loop row by row with
    per-row overhead: a pointwise conv's 200x192 output 9.8 -> 2.2 us, 8x2304 5.4 -> 1.3
    (1 thread), some 3-8 us a conv in PP-OCR's mobile nets."""
    n, O, P = y.shape
    yf = y.reshape(-1)
    for i in range(n):
        for o in range(O):
            bias = b[o]
            start = (i * O + o) * P
            for p in range(start, start + P):
                yf[_u(p)] += bias


def _unfolded_pixels_reference(cols, b, y, kernel):
    O, taps, n, D, H, W = cols.shape
    KD, KH, KW = kernel
    grid = cols.reshape(O, KD, KH, KW, n, D, H, W).transpose(4, 0, 5, 1, 6, 2, 7, 3)
    grid = grid.reshape(y.shape)
    y[...] = grid + b.reshape(1, -1, 1, 1, 1) if b.size else grid


@kernel(_unfolded_pixels_reference)
def unfolded_pixels(cols, b, y, kernel):
    """y[i, o, z·KD + kd, v·KH + kh, u·KW + kw] = cols[o, tap, i, z, v, u] + b[o] (no bias when
    ``b`` is empty): col2im for windows that tile the output without overlap or padding
    (stride = kernel, no dilation), a transposed convolution's "pixel shuffle" (PP-OCR's 2x2
    stride-2 upsampling).  Every output cell is one unfolded value: each output row is written
    once, in order, its columns read from the kernel row's ``KW`` unfolded rows, and the bias
    added on the way.  The general col2im gathers and sums row by row: PP-OCR det's 24 -> 24
    channels on 16x16, 1 thread, kernel alone, col2im + a bias pass 38 + 5 us, this 8.7."""
    n, O, D2, H2, W2 = y.shape
    KD, KH, KW = kernel
    D, H, Wd = cols.shape[3], cols.shape[4], cols.shape[5]
    taps = KD * KH * KW
    cf = cols.reshape(-1)
    yf = y.reshape(-1)
    plane = D * H * Wd
    step = n * plane                # between the unfolded rows of consecutive taps
    has_bias = b.size > 0
    for i in range(n):
        for o in range(O):
            bias = b[o] if has_bias else yf.dtype.type(0)
            for z in range(D):
                for kd in range(KD):
                    for v in range(H):
                        for kh in range(KH):
                            dst = (((i * O + o) * D2 + z * KD + kd) * H2 + v * KH + kh) * W2
                            src = (((o * taps + (kd * KH + kh) * KW) * n + i) * plane
                                   + (z * H + v) * Wd)
                            if KW == 2:
                                for u in range(Wd):
                                    yf[_u(dst + 2 * u)] = cf[_u(src + u)] + bias
                                    yf[_u(dst + 2 * u + 1)] = cf[_u(src + step + u)] + bias
                            else:
                                for u in range(Wd):
                                    for kw in range(KW):
                                        yf[_u(dst + u * KW + kw)] = (cf[_u(src + kw * step + u)]
                                                                     + bias)


# -- direct convolution ----------------------------------------------------------------------

def _grouped(W):
    O, cin = W.shape[:2]
    return W.reshape(O, cin, -1)


def _conv_direct_reference(x, W, b, y, strides, dilations, begin):
    n, C = x.shape[:2]
    O, cin = W.shape[:2]
    groups = C // cin
    cols = _cols_of(x, y.shape[2:], W.shape[2:], strides, dilations, begin)
    cols = cols.reshape(groups, cin * cols.shape[1], -1)
    values = np.matmul(W.reshape(groups, O // groups, -1), cols)       # (G, O/G, n · pos)
    values = values.reshape(O, n, -1).swapaxes(0, 1).reshape(y.shape)
    if b.size:
        values = values + b.reshape(1, O, 1, 1, 1)
    y[...] = values


@kernel(_conv_direct_reference)
def conv_direct(x, W, b, y, strides, dilations, begin):
    """y[i, o] = b[o] + Σ_{c in o's group, taps} W[o, c, tap] · x[i, c, shifted by the tap], as
    ``row += w · shifted row`` loops; ``b`` may be empty (no bias)."""
    n, C, D, H, Wd = x.shape
    O, cin, KD, KH, KW = W.shape
    OD, OH, OW = y.shape[2], y.shape[3], y.shape[4]
    sd, sh, sw = strides
    dd, dh, dw = dilations
    bd, bh, bw = begin
    per_group = O // (C // cin)
    taps = KD * KH * KW
    xf = x.reshape(-1)
    wf = W.reshape(-1)
    yf = y.reshape(-1)
    has_bias = b.size > 0
    if sd == 1 and sh == 1 and sw == 1:
        Dp, Hp, Wp = _wide_shapes(OD, OH, OW, KD, KH, KW, dd, dh, dw)
        xp = np.empty(Dp * Hp * Wp, dtype=yf.dtype)
        out = np.empty(OD * Hp * Wp, dtype=yf.dtype)
        for i in range(n):
            for o in range(O):
                first = (o // per_group) * cin
                for ci in range(cin):
                    _stage(xf, (i * C + first + ci) * D * H * Wd, D, H, Wd, xp, Dp, Hp, Wp,
                           bd, bh, bw)
                    _wide_correlate(xp, wf, (o * cin + ci) * taps, False, KD, KH, KW, dd, dh,
                                    dw, Hp, Wp, OD, OH, out, ci == 0,
                                    b[o] if has_bias else yf.dtype.type(0))
                _crop(out, Hp, Wp, OD, OH, OW, (i * O + o) * OD * OH * OW, yf)
        return
    dst = 0
    for i in range(n):
        for o in range(O):
            first = (o // per_group) * cin
            bias = b[o] if has_bias else yf.dtype.type(0)
            for od in range(OD):
                for oh in range(OH):
                    for ow in range(OW):
                        yf[_u(dst + ow)] = bias
                    for ci in range(cin):
                        plane = (i * C + first + ci) * D
                        for kd in range(KD):
                            z = od * sd + kd * dd - bd
                            if z < 0 or z >= D:
                                continue
                            for kh in range(KH):
                                v = oh * sh + kh * dh - bh
                                if v < 0 or v >= H:
                                    continue
                                row = ((plane + z) * H + v) * Wd
                                t = ((o * cin + ci) * KD + kd) * KH * KW + kh * KW
                                for kw in range(KW):
                                    w = wf[_u(t + kw)]
                                    off = kw * dw - bw
                                    lo, hi = _span(off, sw, Wd, OW)
                                    if sw == 1:
                                        for ow in range(lo, hi):
                                            yf[_u(dst + ow)] += w * xf[_u(row + ow + off)]
                                    else:
                                        for ow in range(lo, hi):
                                            yf[_u(dst + ow)] += w * xf[_u(row + ow * sw + off)]
                    dst += OW


def _conv_direct_input_grad_reference(gy, W, gx, strides, dilations, begin):
    n, C = gx.shape[:2]
    O, cin = W.shape[:2]
    groups = C // cin
    gyg = gy.reshape(n, groups, O // groups, -1).transpose(1, 2, 0, 3).reshape(
        groups, O // groups, -1)
    Wg = W.reshape(groups, O // groups, -1)
    gcols = np.matmul(Wg.transpose(0, 2, 1), gyg)
    gcols = gcols.reshape((C, -1, n) + gy.shape[2:])
    gx[...] = _fold(gcols, gx.shape, W.shape[2:], strides, dilations, begin)


@kernel(_conv_direct_input_grad_reference)
def conv_direct_input_grad(gy, W, gx, strides, dilations, begin):
    """gx = the adjoint of :func:`conv_direct` (no bias) applied to gy, as
    ``shifted row += w · gy row`` loops."""
    n, C, D, H, Wd = gx.shape
    O, cin, KD, KH, KW = W.shape
    OD, OH, OW = gy.shape[2], gy.shape[3], gy.shape[4]
    sd, sh, sw = strides
    dd, dh, dw = dilations
    bd, bh, bw = begin
    per_group = O // (C // cin)
    gf = gx.reshape(-1)
    yf = gy.reshape(-1)
    wf = W.reshape(-1)
    taps = KD * KH * KW
    if sd == 1 and sh == 1 and sw == 1:
        # gx = gy (placed with the complementary padding) correlated with the mirrored taps
        Dq, Hq, Wq = _wide_shapes(D, H, Wd, KD, KH, KW, dd, dh, dw)
        gp = np.empty(Dq * Hq * Wq, dtype=gf.dtype)
        out = np.empty(D * Hq * Wq, dtype=gf.dtype)
        zero = gf.dtype.type(0)
        for i in range(n):
            for c in range(C):
                g = c // cin
                ci = c - g * cin
                for o in range(g * per_group, (g + 1) * per_group):
                    _stage(yf, (i * O + o) * OD * OH * OW, OD, OH, OW, gp, Dq, Hq, Wq,
                           (KD - 1) * dd - bd, (KH - 1) * dh - bh, (KW - 1) * dw - bw)
                    _wide_correlate(gp, wf, (o * cin + ci) * taps, True, KD, KH, KW, dd, dh,
                                    dw, Hq, Wq, D, H, out, o == g * per_group, zero)
                _crop(out, Hq, Wq, D, H, Wd, (i * C + c) * D * H * Wd, gf)
        return
    for j in range(gf.size):
        gf[_u(j)] = 0
    src = 0
    for i in range(n):
        for o in range(O):
            first = (o // per_group) * cin
            for od in range(OD):
                for oh in range(OH):
                    for ci in range(cin):
                        plane = (i * C + first + ci) * D
                        for kd in range(KD):
                            z = od * sd + kd * dd - bd
                            if z < 0 or z >= D:
                                continue
                            for kh in range(KH):
                                v = oh * sh + kh * dh - bh
                                if v < 0 or v >= H:
                                    continue
                                row = ((plane + z) * H + v) * Wd
                                t = ((o * cin + ci) * KD + kd) * KH * KW + kh * KW
                                for kw in range(KW):
                                    w = wf[_u(t + kw)]
                                    off = kw * dw - bw
                                    lo, hi = _span(off, sw, Wd, OW)
                                    if sw == 1:
                                        for ow in range(lo, hi):
                                            gf[_u(row + ow + off)] += w * yf[_u(src + ow)]
                                    else:
                                        for ow in range(lo, hi):
                                            gf[_u(row + ow * sw + off)] += w * yf[_u(src + ow)]
                    src += OW


def _conv_direct_weight_grad_reference(x, gy, gW, strides, dilations, begin):
    n, C = x.shape[:2]
    O, cin = gW.shape[:2]
    groups = C // cin
    cols = _cols_of(x, gy.shape[2:], gW.shape[2:], strides, dilations, begin)
    cols = cols.reshape(groups, -1, cols[0, 0].size)
    gyg = gy.reshape(n, groups, O // groups, -1).transpose(1, 2, 0, 3).reshape(
        groups, O // groups, -1)
    gW[...] = np.matmul(gyg, cols.transpose(0, 2, 1)).reshape(gW.shape)


@kernel(_conv_direct_weight_grad_reference)
def conv_direct_weight_grad(x, gy, gW, strides, dilations, begin):
    """gW[o, c, tap] = Σ_{i, positions} gy[i, o, p] · x[i, c, p shifted by the tap]: each
    (o, c, tap) accumulates a row of partial sums over the batch and the output rows (a loop
    that vectorises without reordering any sum), and the row is summed last."""
    n, C, D, H, Wd = x.shape
    O, cin, KD, KH, KW = gW.shape
    OD, OH, OW = gy.shape[2], gy.shape[3], gy.shape[4]
    sd, sh, sw = strides
    dd, dh, dw = dilations
    bd, bh, bw = begin
    per_group = O // (C // cin)
    taps = KD * KH * KW
    xf = x.reshape(-1)
    yf = gy.reshape(-1)
    gf = gW.reshape(-1)
    if sd == 1 and sh == 1 and sw == 1 and OW <= WIDE_WEIGHT_GRAD_MAX:
        _weight_grad_wide(xf, yf, gf, n, C, D, H, Wd, O, cin, KD, KH, KW, OD, OH, OW,
                          dilations, begin)
        return
    acc = np.zeros(O * cin * taps * OW, dtype=gW.dtype)
    src = 0
    for i in range(n):
        for o in range(O):
            first = (o // per_group) * cin
            for od in range(OD):
                for oh in range(OH):
                    for ci in range(cin):
                        plane = (i * C + first + ci) * D
                        for kd in range(KD):
                            z = od * sd + kd * dd - bd
                            if z < 0 or z >= D:
                                continue
                            for kh in range(KH):
                                v = oh * sh + kh * dh - bh
                                if v < 0 or v >= H:
                                    continue
                                row = ((plane + z) * H + v) * Wd
                                t = ((o * cin + ci) * KD + kd) * KH * KW + kh * KW
                                for kw in range(KW):
                                    a = (t + kw) * OW
                                    off = kw * dw - bw
                                    lo, hi = _span(off, sw, Wd, OW)
                                    if sw == 1:
                                        for ow in range(lo, hi):
                                            acc[_u(a + ow)] += (yf[_u(src + ow)]
                                                                * xf[_u(row + ow + off)])
                                    else:
                                        for ow in range(lo, hi):
                                            acc[_u(a + ow)] += (yf[_u(src + ow)]
                                                                * xf[_u(row + ow * sw + off)])
                    src += OW
    for k in range(O * cin * taps):
        s = acc[_u(k * OW)]
        for ow in range(1, OW):
            s += acc[_u(k * OW + ow)]
        gf[_u(k)] = s


@jit
def _dot8(a, b, off, L):
    """Σ_{j < L} a[j] · b[j + off] (L a multiple of 8) over eight partial sums, added in a fixed
    order: written as eight scalars, which LLVM packs into one vector register."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = a.dtype.type(0)
    for j in range(0, L, 8):
        k = off + j
        s0 += a[_u(j)] * b[_u(k)]
        s1 += a[_u(j + 1)] * b[_u(k + 1)]
        s2 += a[_u(j + 2)] * b[_u(k + 2)]
        s3 += a[_u(j + 3)] * b[_u(k + 3)]
        s4 += a[_u(j + 4)] * b[_u(k + 4)]
        s5 += a[_u(j + 5)] * b[_u(k + 5)]
        s6 += a[_u(j + 6)] * b[_u(k + 6)]
        s7 += a[_u(j + 7)] * b[_u(k + 7)]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@jit
def _weight_grad_wide(xf, yf, gf, n, C, D, H, Wd, O, cin, KD, KH, KW, OD, OH, OW, dilations,
                      begin):
    """:func:`conv_direct_weight_grad` for unit strides: per (o, c) and image, the planes are
    staged wide (x zero-padded, gy zero in the garbage columns) and every tap is one dot product
    over the plane (:func:`_dot8`); the images' dot products are summed in order."""
    dd, dh, dw = dilations
    bd, bh, bw = begin
    per_group = O // (C // cin)
    taps = KD * KH * KW
    Dp, Hp, Wp = _wide_shapes(OD, OH, OW, KD, KH, KW, dd, dh, dw)
    L = (((OD - 1) * Hp + OH) * Wp + 7) // 8 * 8      # (the last tap then reads xp[< size])
    xp = np.empty(Dp * Hp * Wp + 8, dtype=gf.dtype)
    gp = np.empty(L, dtype=gf.dtype)
    acc = np.empty(taps, dtype=gf.dtype)
    offs = np.empty(taps, dtype=np.int64)
    t = 0
    for kd in range(KD):
        for kh in range(KH):
            for kw in range(KW):
                offs[t] = (kd * dd * Hp + kh * dh) * Wp + kw * dw
                t += 1
    for o in range(O):
        first = (o // per_group) * cin
        for ci in range(cin):
            for t in range(taps):
                acc[t] = 0
            for i in range(n):
                _stage(xf, (i * C + first + ci) * D * H * Wd, D, H, Wd, xp, Dp, Hp, Wp, bd, bh, bw)
                _stage(yf, (i * O + o) * OD * OH * OW, OD, OH, OW, gp, OD, Hp, Wp, 0, 0, 0)
                for t in range(taps):
                    acc[t] += _dot8(gp, xp, offs[t], L)
            for t in range(taps):
                gf[_u((o * cin + ci) * taps + t)] = acc[t]


# -- depthwise convolution (one input channel per group) -------------------------------------

@kernel(_conv_direct_reference)
def conv_depthwise(x, W, b, y, strides, dilations, begin):
    """:func:`conv_direct` for depthwise convolutions (``W`` is ``(C · m, 1, *kernel)``, output
    channel ``o`` reads input channel ``o // m``), any strides and dilations, channels last.

    Per image the input is transposed to ``(positions, O)`` (channel ``o // m`` repeated for a
    channel multiplier ``m``) and the taps to ``(taps, O)``; then every output cell is its
    bias row plus, for each tap that reads inside the input, ``w[tap, :] · x[cell + tap, :]``:
    one contiguous loop over the channels, which LLVM vectorises whatever the plane's size or
    stride, and taps that read padding cost nothing (a 5x5 window on a 2x2 plane does 9 of
    its 25 taps).  The output is transposed back.  Each output sums its bias and then its
    taps in order, as :func:`conv_direct` does: the two give the same bits."""
    n, C, D, H, Wd = x.shape
    O, cin, KD, KH, KW = W.shape
    OD, OH, OW = y.shape[2], y.shape[3], y.shape[4]
    sd, sh, sw = strides
    dd, dh, dw = dilations
    bd, bh, bw = begin
    m = O // C
    taps = KD * KH * KW
    size = D * H * Wd
    plane = OD * OH * OW
    xf = x.reshape(-1)
    wf = W.reshape(-1)
    yf = y.reshape(-1)
    wt = np.empty(taps * O, dtype=yf.dtype)
    for o in range(O):
        for t in range(taps):
            wt[_u(t * O + o)] = wf[_u(o * taps + t)]
    row0 = np.zeros(O, dtype=yf.dtype)
    if b.size > 0:
        for o in range(O):
            row0[o] = b[o]
    xt = np.empty(size * O, dtype=yf.dtype)
    yt = np.empty(plane * O, dtype=yf.dtype)
    for i in range(n):
        for o in range(O):
            src = (i * C + o // m) * size
            for p in range(size):
                xt[_u(p * O + o)] = xf[_u(src + p)]
        cell = 0
        for od in range(OD):
            for oh in range(OH):
                for ow in range(OW):
                    out = cell * O
                    for o in range(O):
                        yt[_u(out + o)] = row0[o]
                    t = 0
                    for kd in range(KD):
                        z = od * sd + kd * dd - bd
                        if z < 0 or z >= D:
                            t += KH * KW
                            continue
                        for kh in range(KH):
                            v = oh * sh + kh * dh - bh
                            if v < 0 or v >= H:
                                t += KW
                                continue
                            for kw in range(KW):
                                u = ow * sw + kw * dw - bw
                                if u >= 0 and u < Wd:
                                    src = ((z * H + v) * Wd + u) * O
                                    tap = t * O
                                    for o in range(O):
                                        yt[_u(out + o)] += wt[_u(tap + o)] * xt[_u(src + o)]
                                t += 1
                    cell += 1
        dst = i * O * plane
        for o in range(O):
            for p in range(plane):
                yf[_u(dst + o * plane + p)] = yt[_u(p * O + o)]


# -- direct convolution on phase planes -------------------------------------------------------

#: what one loop over a band of output rows costs beyond its cells, in cells (see
#: :func:`conv_planes`): a kernel row skips the output rows whose windows read only padding
#: rows when that saves more cells than these per extra loop.  Fitted, 1 thread, depthwise
#: kernel alone, all rows vs bands: 5x5 on 200x2x96 68 vs 47 us, 384x2x2 72 vs 51, 88x3x96
#: 43 vs 40, (2, 1)-strided 104x3x96 37 vs 33 (bands chosen); 3x3 on 32x6x96 14 vs 18,
#: 96x8x8 15 vs 23, 5x5 192x4x4 34 vs 58, (2, 1)-strided 32x6x96 19 vs 21 (all rows kept).
BAND_CALL_CELLS = 100

@jit
def _phase_offsets(D, H, Wd, strides, begin, Dq, Hq, Wq):
    """Where :func:`_stage_phases` puts each input row and column: the padded plane split by
    phase along each axis, cell (z, v, u) of the padded plane going to phase plane
    (z % sd, v % sh, u % sw), position (z // sd, v // sh, u // sw), each phase plane
    (Dq, Hq, Wq).  Computed once per call: the divisions would cost more than the copy."""
    sd, sh, sw = strides
    bd, bh, bw = begin
    plane = Dq * Hq * Wq
    rows = np.empty(D * H, dtype=np.int64)
    for z in range(D):
        pz = z + bd
        for v in range(H):
            pv = v + bh
            rows[z * H + v] = (((pz % sd) * sh + pv % sh) * sw * plane
                               + ((pz // sd) * Hq + pv // sh) * Wq)
    cols = np.empty(Wd, dtype=np.int64)
    for u in range(Wd):
        cols[u] = ((u + bw) % sw) * plane + (u + bw) // sw
    return rows, cols


@jit
def _stage_phases(xf, src, rows, cols, Wd, unit, buf):
    """The plane at ``xf[src:]`` into ``buf`` (whose padding cells are already zero), split by
    phase (:func:`_phase_offsets`): every tap of a strided window then reads one phase plane at
    unit stride.  ``unit``: the last axis has unit stride (its columns stay contiguous)."""
    for r in range(rows.size):
        s = src + r * Wd
        d = rows[r]
        if unit:
            d += cols[0]
            for u in range(Wd):
                buf[_u(d + u)] = xf[_u(s + u)]
        else:
            for u in range(Wd):
                buf[_u(d + cols[u])] = xf[_u(s + u)]


@jit
def _taps5(out, lo, hi, first, bias, buf, p0, p1, p2, p3, p4, w0, w1, w2, w3, w4):
    """out[j] (bias if ``first``, else out[j]) + Σ w_k · buf[j + p_k] over five taps, in order,
    for j in [lo, hi): one vectorised loop, the partial sum kept in a register across taps."""
    if first:
        for j in range(lo, hi):
            s = bias
            s += w0 * buf[_u(j + p0)]
            s += w1 * buf[_u(j + p1)]
            s += w2 * buf[_u(j + p2)]
            s += w3 * buf[_u(j + p3)]
            s += w4 * buf[_u(j + p4)]
            out[_u(j)] = s
    else:
        for j in range(lo, hi):
            s = out[_u(j)]
            s += w0 * buf[_u(j + p0)]
            s += w1 * buf[_u(j + p1)]
            s += w2 * buf[_u(j + p2)]
            s += w3 * buf[_u(j + p3)]
            s += w4 * buf[_u(j + p4)]
            out[_u(j)] = s


@jit
def _taps3(out, lo, hi, first, bias, buf, p0, p1, p2, w0, w1, w2):
    """:func:`_taps5` for three taps."""
    if first:
        for j in range(lo, hi):
            s = bias
            s += w0 * buf[_u(j + p0)]
            s += w1 * buf[_u(j + p1)]
            s += w2 * buf[_u(j + p2)]
            out[_u(j)] = s
    else:
        for j in range(lo, hi):
            s = out[_u(j)]
            s += w0 * buf[_u(j + p0)]
            s += w1 * buf[_u(j + p1)]
            s += w2 * buf[_u(j + p2)]
            out[_u(j)] = s


@jit
def _taps1(out, lo, hi, first, bias, buf, p0, w0):
    """:func:`_taps5` for one tap."""
    if first:
        for j in range(lo, hi):
            out[_u(j)] = bias + w0 * buf[_u(j + p0)]
    else:
        for j in range(lo, hi):
            out[_u(j)] += w0 * buf[_u(j + p0)]


@kernel(_conv_direct_reference)
def conv_planes(x, W, b, y, strides, dilations, begin):
    """:func:`conv_direct` (any groups; meant for depthwise convs and first layers, few input
    channels per group), any strides and dilations.

    Per input channel the plane is staged zero-padded and split by stride phase
    (:func:`_phase_offsets`, :func:`_stage_phases`), so that every tap reads its phase plane
    at unit stride and the outputs can be computed on a grid as wide as a phase plane (the
    extra columns are garbage, cropped at the end): each kernel row is then one long loop over
    the grid that adds all its taps to a register before storing (:func:`_taps5`,
    :func:`_taps3`), which LLVM vectorises however short the output rows are, with one load
    and store of the partial sum per kernel row instead of per tap.  No row or column that a
    stride skips is computed, and on planes where many windows overhang the top or bottom
    (PP-OCR's 5x5 windows on 2- and 3-row planes) a kernel row runs only over the band of
    output rows whose windows it keeps inside the input (:data:`BAND_CALL_CELLS`), and no
    depth plane of padding is read.  Each output sums its bias and then, input channel by
    input channel, its taps in order, the padding columns' (and, without bands, rows') as
    zero products, as conv_direct does: the same bits (a zero product changes no sum but the
    sign of a zero one)."""
    n, C, D, H, Wd = x.shape
    O, cin, KD, KH, KW = W.shape
    OD, OH, OW = y.shape[2], y.shape[3], y.shape[4]
    sd, sh, sw = strides
    dd, dh, dw = dilations
    bd, bh, bw = begin
    per_group = O // (C // cin)
    taps = KD * KH * KW
    xf = x.reshape(-1)
    wf = W.reshape(-1)
    yf = y.reshape(-1)
    Dq = (max((OD - 1) * sd + (KD - 1) * dd + 1, D + bd) + sd - 1) // sd
    Hq = (max((OH - 1) * sh + (KH - 1) * dh + 1, H + bh) + sh - 1) // sh
    Wq = (max((OW - 1) * sw + (KW - 1) * dw + 1, Wd + bw) + sw - 1) // sw
    plane = Dq * Hq * Wq
    staged = sd * sh * sw * plane               # the phase planes of one input channel
    # (a spare row: the garbage columns of the last grid row read past the last phase plane)
    buf = np.zeros(cin * staged + Wq, dtype=yf.dtype)
    grid = np.empty(OD * Hq * Wq, dtype=yf.dtype)
    rows, cols = _phase_offsets(D, H, Wd, strides, begin, Dq, Hq, Wq)
    offs = np.empty(taps, dtype=np.int64)
    t = 0
    for kd in range(KD):
        for kh in range(KH):
            for kw in range(KW):
                a, c, e = kd * dd, kh * dh, kw * dw
                offs[t] = ((((a % sd) * sh + c % sh) * sw + e % sw) * plane
                           + ((a // sd) * Hq + c // sh) * Wq + e // sw)
                t += 1
    has_bias = b.size > 0
    zero = yf.dtype.type(0)
    # bands of output rows whose windows have the same kernel rows inside the input: each
    # kernel row then runs over its band at once, and no kernel row that reads only padding
    # rows runs at all (a 5x5 window on PP-OCR's 2-row planes has 2 of its 5 rows inside) --
    # when that saves more than the extra, shorter loops cost (see BAND_CALL_CELLS); else
    # one band of every row and kernel row, the padding rows' taps adding zero products
    bands = np.empty((OH, 4), dtype=np.int64)
    nb = 0
    banded = 0
    for oh in range(OH):
        k0, k1 = _span(oh * sh - bh, dh, H, KH)
        if nb > 0 and bands[nb - 1, 2] == k0 and bands[nb - 1, 3] == k1:
            bands[nb - 1, 1] = oh + 1
            banded += (k1 - k0) * Wq
        else:
            bands[nb, 0], bands[nb, 1], bands[nb, 2], bands[nb, 3] = oh, oh + 1, k0, k1
            nb += 1
            banded += (k1 - k0) * (Wq + BAND_CALL_CELLS)
    if banded >= KH * (OH * Wq + BAND_CALL_CELLS):
        nb = 1
        bands[0, 0], bands[0, 1], bands[0, 2], bands[0, 3] = 0, OH, 0, KH
    for i in range(n):
        for o in range(O):
            if o % per_group == 0:              # a new group: stage its input channels
                first_channel = (o // per_group) * cin
                for ci in range(cin):
                    _stage_phases(xf, (i * C + first_channel + ci) * D * H * Wd, rows, cols,
                                  Wd, sw == 1, buf[ci * staged:])
            bias = b[o] if has_bias else zero
            for od in range(OD):
                for band in range(nb):
                    lo = (od * Hq + bands[band, 0]) * Wq
                    hi = (od * Hq + bands[band, 1]) * Wq
                    first = True
                    for ci in range(cin):
                        w = (o * cin + ci) * taps
                        p = ci * staged
                        for kd in range(KD):
                            z = od * sd + kd * dd - bd
                            if z < 0 or z >= D:         # a plane of padding
                                continue
                            for kh in range(bands[band, 2], bands[band, 3]):
                                t = (kd * KH + kh) * KW
                                if KW == 5:
                                    _taps5(grid, lo, hi, first, bias, buf, p + offs[t],
                                           p + offs[t + 1], p + offs[t + 2], p + offs[t + 3],
                                           p + offs[t + 4], wf[_u(w + t)], wf[_u(w + t + 1)],
                                           wf[_u(w + t + 2)], wf[_u(w + t + 3)],
                                           wf[_u(w + t + 4)])
                                elif KW == 3:
                                    _taps3(grid, lo, hi, first, bias, buf, p + offs[t],
                                           p + offs[t + 1], p + offs[t + 2], wf[_u(w + t)],
                                           wf[_u(w + t + 1)], wf[_u(w + t + 2)])
                                else:
                                    for k in range(t, t + KW):
                                        _taps1(grid, lo, hi, first and k == t, bias, buf,
                                               p + offs[k], wf[_u(w + k)])
                                first = False
                    if first:                   # every window of the band reads padding only
                        for j in range(lo, hi):
                            grid[_u(j)] = bias
            _crop(grid, Hq, Wq, OD, OH, OW, (i * O + o) * OD * OH * OW, yf)
