"""A model summary: parameter count, FLOPs and activation memory per sample.

What a user asks of a network before training it — how big is it, how much compute does one
sample cost, how much memory does a batch need — estimated from the shapes shape inference
already gives every value, without running anything.

Counting rules (a multiply-add is 2 FLOPs):

* ``dense``, ``matmul``, ``conv``, ``conv_transpose`` and ``einsum`` exactly: 2 FLOPs per
  multiply-add of the product, plus 1 per output element for a bias;
* ops that only move or view data (reshape, transpose, concat, gather, branch...) cost 0;
* every other op 1 FLOP per element of its largest input or output (elementwise ops and
  activations exactly; reductions, pools and losses as one pass over their input).

"Per sample" means the batch axis (``N``) counts as 1.  Activation memory is the bytes of
every value an op computes (what a training forward keeps for backward), branch copies
excluded; values without a batch axis are counted once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .graph import Graph

#: ops that move or view data without arithmetic
DATA_MOVEMENT = frozenset((
    "branch", "identity", "reshape", "flatten", "squeeze", "unsqueeze", "transpose", "concat",
    "split", "slice", "gather", "gather_elements", "shape", "size", "cast", "expand", "tile",
    "constant_of_shape", "pad", "dropout", "one_hot", "range"))


@dataclass
class NodeCost:
    """One op's FLOPs and output bytes per sample."""

    name: str
    op: str
    flops: int
    activation_bytes: int


@dataclass
class Summary:
    """The totals, and the cost of each op in topological order."""

    params: int
    trainable_params: int
    param_bytes: int
    flops: int
    activation_bytes: int
    nodes: list[NodeCost] = field(default_factory=list)

    def text(self) -> str:
        """Three lines, as ``flowgrad show`` and ``check`` print them."""
        return (f"parameters: {self.params:,} ({self.trainable_params:,} trainable, "
                f"{human_bytes(self.param_bytes)})\n"
                f"FLOPs per sample: {self.flops:,} (~{human_count(self.flops)})\n"
                f"activation memory per sample: {human_bytes(self.activation_bytes)}")


def summarize(graph: Graph) -> Summary:
    """The summary of a loaded (shape-inferred) graph."""
    params = [graph.spec_of(p) for p in graph.params]
    trainable = sum(per_sample(graph.spec_of(p).shape) for p in graph.params
                    if graph.is_trainable(p))
    nodes = []
    for name in graph.topological_order():
        if not graph.is_op(name):
            continue
        op = graph.op_of(name)
        ins = [graph.specs(src)[port] for src, port in
               (s for s in graph.input_sources(name) if s is not None)]
        outs = list(graph.specs(name) or ())
        stored = 0 if op.type == "branch" else sum(per_sample(s.shape) * s.dtype.itemsize
                                                   for s in outs)
        nodes.append(NodeCost(name, op.type, op_flops(op, ins, outs), stored))
    return Summary(params=sum(per_sample(s.shape) for s in params), trainable_params=trainable,
                   param_bytes=sum(per_sample(s.shape) * s.dtype.itemsize for s in params),
                   flops=sum(n.flops for n in nodes),
                   activation_bytes=sum(n.activation_bytes for n in nodes), nodes=nodes)


def op_flops(op, ins: list, outs: list) -> int:
    """FLOPs per sample of one op, from its input and output specs (rules: module doc)."""
    if op.type in DATA_MOVEMENT:
        return 0
    out = per_sample(outs[0].shape) if outs else 0
    if op.type == "dense":      # W's input dim may be unknown (a fed weight): count it as 1
        return 2 * (ins[1].shape[0] or 1) * out + (out if len(ins) > 2 else 0)
    if op.type == "matmul":
        return 2 * (ins[0].shape[-1] or 1) * out
    if op.type == "conv":
        return 2 * per_sample(ins[1].shape[1:]) * out + (out if len(ins) > 2 else 0)
    if op.type == "conv_transpose":
        return 2 * per_sample(ins[1].shape[1:]) * per_sample(ins[0].shape) + \
            (out if len(ins) > 2 else 0)
    if op.type == "einsum" and "..." not in op.equation:
        return _einsum_flops(op.equation, ins)
    return max([per_sample(s.shape) for s in ins + outs] or [0])


def _einsum_flops(equation: str, ins: list) -> int:
    """One multiply per extra operand and one add per term when letters are summed."""
    terms = equation.split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for term, spec in zip(terms, ins):
        for letter, dim in zip(term, spec.shape):
            sizes[letter] = dim or 1
    letters = "".join(terms)      # numpy's implicit output: the letters used once
    out = equation.split("->")[1] if "->" in equation else \
        "".join(c for c in sizes if letters.count(c) == 1)
    summed = bool(set(sizes) - set(out))
    return math.prod(sizes.values()) * (len(terms) - 1 + summed)


def per_sample(shape) -> int:
    """Elements per sample: an unknown (batch) dimension counts as 1."""
    return math.prod(d for d in shape if d is not None)


def human_count(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}P"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.4g} {unit}"
        n /= 1024
    return f"{n:.4g} TiB"
