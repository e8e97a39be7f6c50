"""Shape ops (flowgrad.ops.shape, and concat of flowgrad.ops.merge): reshape, transpose,
flatten, squeeze/unsqueeze, concat, and DepthToSpace/SpaceToDepth as reshape + transpose."""
from __future__ import annotations

from ..builder import ImportProblem, Value
from ..translations import Translations, node_exporter
from ._common import axes_input, ints

T = Translations("shape")

T.same("Flatten", "flatten", attrs=("axis",))


@T.imports("Reshape")
def reshape_1(b, a, ins):
    return b.final("reshape", [ins.need(0, "data")], shape=a.ints("shape"))


@T.imports("Reshape", since=5)
def reshape_5(b, a, ins):
    """A shape known at load time becomes the op's attribute; a computed one stays an input
    (recomputed per batch)."""
    extra = {"allowzero": True} if a.int("allowzero", 0) else {}
    x, shape = ins.need(0, "data"), ins.need(1, "shape")
    if shape.is_const or shape.initial is not None:
        return b.final("reshape", [x], shape=ints(b.static(shape, "shape"), "Reshape shape"),
                       **extra)
    if shape.elements is not None and not extra:
        # a computed target whose elements are static or the input's own dim at the same place
        # (PyTorch's x.view(x.size(0), x.size(1), 32, 96)): that dim is ONNX's 0 (copy); one
        # other free element is the only size the reshape can take, ONNX's -1, so the output's
        # dims are inferred (a batch that does not carry through is then seen at load time)
        own = {(x.node, x.port, i): 0 for i in range(x.ndim)} if not x.is_const else {}
        target = [e if isinstance(e, int) else own.get(e) if e[2] == i else None
                  for i, e in enumerate(shape.elements)]
        if target.count(None) == 1 and -1 not in target:
            target[target.index(None)] = -1
        if None not in target:
            return b.final("reshape", [x], shape=target)
    return b.final("reshape", [x, shape], **extra)


@T.exports("reshape")
def _reshape(c):
    shape = c.ins[1] if len(c.ins) > 1 and c.ins[1] else c.const(c.op.shape)
    c.node("Reshape", [c.ins[0], shape], c.outs)


@T.imports("Transpose")
def transpose(b, a, ins):
    x = ins.need(0, "data")
    perm = a.ints("perm", None)
    if perm is None:
        perm = list(range(x.ndim))[::-1]
    return b.final("transpose", [x], perm=perm)


T.exports("transpose")(node_exporter("Transpose", ("perm",)))


@T.imports("Squeeze")
def squeeze_1(b, a, ins):
    attrs = {"axes": a.ints("axes")} if "axes" in a else {}
    return b.rearranged("squeeze", [ins.need(0, "data")], **attrs)


@T.imports("Squeeze", since=13, static=(1,))
def squeeze_13(b, a, ins):
    axes = b.static(ins.opt(1), "Squeeze axes")
    attrs = {} if axes is None else {"axes": ints(axes, "Squeeze axes")}
    return b.rearranged("squeeze", [ins.need(0, "data")], **attrs)


@T.imports("Unsqueeze")
def unsqueeze_1(b, a, ins):
    return b.rearranged("unsqueeze", [ins.need(0, "data")], axes=a.ints("axes"))


@T.imports("Unsqueeze", since=13, static=(1,))
def unsqueeze_13(b, a, ins):
    axes = b.static(ins.need(1, "axes"), "Unsqueeze axes")
    return b.rearranged("unsqueeze", [ins.need(0, "data")],
                        axes=ints(axes, "Unsqueeze axes"))


T.exports("squeeze")(axes_input("Squeeze"))
T.exports("unsqueeze")(axes_input("Unsqueeze"))


@T.imports("Concat")
def concat(b, a, ins):
    """Joining pieces of shapes (constants, and values with known elements) keeps what is
    known of each piece; it folds when all of it is static."""
    values = [v for v in ins if v is not None]
    axis = a.int("axis", 1)
    parts = [b.elements_of(v) if v.ndim == 1 else None for v in values]
    if None in parts or axis not in (0, -1):
        return b.final("concat", values, axis=axis)
    elements = sum(parts, ())
    return b.known(elements, (len(elements),), lambda: b.final("concat", values, axis=axis))


T.exports("concat")(node_exporter("Concat", ("axis",)))


def _blocks(x: Value, k: int, what: str) -> list[int]:
    """The dims of a 4-d input whose dims after the batch are static, for block size ``k``."""
    if x.ndim != 4:
        raise ImportProblem(f"{what} needs a 4-d input (N, C, H, W), not {x.ndim}-d")
    if k < 1:
        raise ImportProblem(f"{what} needs blocksize >= 1, not {k}")
    dims = list(x.shape)
    if None in dims[1:]:
        raise ImportProblem(f"{what} needs the input's dims (after the batch) to be static")
    return dims


@T.imports("DepthToSpace")
def depth_to_space(b, a, ins):
    x, k = ins.need(0, "input"), a.int("blocksize")
    _, c, h, w = _blocks(x, k, "DepthToSpace")
    if a.string("mode", "DCR") == "DCR":
        t = b.op("reshape", [x], shape=[0, k, k, c // (k * k), h, w])[0]
        t = b.op("transpose", [t], perm=[0, 3, 4, 1, 5, 2])[0]
    else:
        t = b.op("reshape", [x], shape=[0, c // (k * k), k, k, h, w])[0]
        t = b.op("transpose", [t], perm=[0, 1, 4, 2, 5, 3])[0]
    return b.final("reshape", [t], shape=[-1, c // (k * k), h * k, w * k])


@T.imports("SpaceToDepth")
def space_to_depth(b, a, ins):
    x, k = ins.need(0, "input"), a.int("blocksize")
    _, c, h, w = _blocks(x, k, "SpaceToDepth")
    t = b.op("reshape", [x], shape=[0, c, h // k, k, w // k, k])[0]
    perm = [0, 3, 5, 1, 2, 4] if a.string("mode", "DCR") == "DCR" else [0, 1, 3, 5, 2, 4]
    t = b.op("transpose", [t], perm=perm)[0]
    return b.final("reshape", [t], shape=[-1, c * k * k, h // k, w // k])
