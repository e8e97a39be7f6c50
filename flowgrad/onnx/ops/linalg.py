"""Products and linear algebra (flowgrad.ops.dense, einsum, linalg): MatMul, Gemm, Einsum, and
the matrix-calculus ops inverse, det, logdet and trace."""
from __future__ import annotations

import numpy as np

from ..builder import ImportProblem
from ..export import as_function
from ..translations import Translations, node_exporter, node_importer

T = Translations("linalg")

T.same("MatMul", "matmul")
T.same("Einsum", "einsum", attrs=("equation",))
T.same("Det", "det", since=11)

#: onnxruntime's contrib domain, whose ``Inverse`` flowgrad reads and writes
MICROSOFT = "com.microsoft"


@T.imports("Gemm")
def gemm(b, a, ins):
    """alpha * A' @ B' + beta * C as transpose, dense/matmul, mul and add nodes."""
    A, B, C = ins.need(0, "A"), ins.need(1, "B"), ins.opt(2)
    if A.ndim != 2 or B.ndim != 2:
        raise ImportProblem(f"Gemm multiplies matrices; A is {A.ndim}-d and B {B.ndim}-d")
    alpha, beta = a.float("alpha", 1.0), a.float("beta", 1.0)
    if a.bool("transA", False):
        A = b.op("transpose", [A], perm=[1, 0])[0]
    if a.bool("transB", False):
        B = b.op("transpose", [B], perm=[1, 0])[0]
    if C is not None and beta == 0.0:
        C = None
    n_out = B.shape[1]
    simple_bias = (C is not None and beta == 1.0 and alpha == 1.0
                   and C.shape in ((n_out,), (1, n_out)))
    if simple_bias or C is None and alpha == 1.0:
        return b.final("dense", [A, B, C if simple_bias else None])
    y = b.op("matmul", [A, B])[0]
    if alpha != 1.0:
        y = b.op("mul", [y, b.const(np.asarray(alpha, dtype=y.dtype))])[0]
    if C is None:
        return [y] if alpha == 1.0 else b.final("identity", [y])
    if beta != 1.0:
        C = b.op("mul", [C, b.const(np.asarray(beta, dtype=C.dtype))])[0]
    return b.final("add", [y, C])


@T.exports("dense")
def _dense(c):
    x, W = c.ins[0], c.ins[1]
    if len(c.ins) > 2 and c.ins[2]:
        y = c.node("MatMul", [x, W])
        c.node("Add", [y[0], c.ins[2]], c.outs)
    else:
        c.node("MatMul", [x, W], c.outs)


T.imports("Inverse", domain=MICROSOFT)(node_importer("inverse"))
T.exports("inverse")(node_exporter("Inverse", domain=MICROSOFT))


@T.exports("logdet")
@as_function
def _logdet(c):
    """log |det A|: ONNX has Det (so the function runs anywhere), flowgrad's op is slogdet."""
    det = c.node("Det", c.ins)
    c.node("Log", c.node("Abs", det), c.outs)


@T.exports("trace")
@as_function
def _trace(c):
    c.node("Einsum", c.ins, c.outs, equation="...ii->...")
