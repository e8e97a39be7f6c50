"""Which stored tensors of an imported ONNX model train: the fine-tuning rules.

A model trained by others stores two kinds of float tensors side by side, as initializers or as
``Constant`` nodes (some exporters use one, some the other, some ``Cast`` a float16 tensor or
``Identity`` it first): the **learned** weights of its layers, and **structural** constants its
arithmetic depends on — anchor grids, strides, ``0.5`` offsets, epsilons, ``-inf`` attention
masks, shape arithmetic.  Training the second kind breaks the model (one SGD step moves a grid
off its integers and the next broadcast fails; an epsilon trained negative turns a LayerNorm
into NaN), so "every float initializer is trainable" is the wrong rule.  These rules decide,
per tensor stored in the file (an initializer or a ``Constant`` node's output), by how the
model *uses* it:

* **learned** (a trainable param): the weight, bias or scale inputs of a parametric op
  (:data:`WEIGHT_INPUTS`: Conv/ConvTranspose W and B, Gemm and MatMul operands, Einsum
  operands, the scale and bias of batch/layer/group/instance/RMS normalisation, the recurrent
  W, R, B and peepholes, an embedding table read by Gather, the PRelu slope); the operand of
  an ``Add``, ``Sub`` or ``Mul`` applied to a layer's output (a bias or channel scale written
  apart from its MatMul/Conv, through reshapes and transposes) or to a normalised value (the
  gamma and beta of a LayerNorm an exporter spelled out as ReduceMean/Sub/Sqrt/Div/Mul/Add, or
  jax2tf's ``x * (rsqrt(var + eps) * gamma) + (beta - mean * ...)``); whatever an op of a
  custom domain reads (a plugin's op: flowgrad cannot know better); and a stored tensor that
  only moves (Slice, Concat, Split, Reshape, Transpose, Cast, Identity...) on its way to one of
  those — the stored tensor is the param, under the model's name for it;
* **state** (a non-trainable param the plan updates in training mode): running statistics,
  declared by a translation's ``state=`` positions (BatchNormalization's mean and variance);
* **structural** (a constant, folded where it can be): everything else — operands of every
  other standard op, a single element applied by Add/Sub/Mul (a scale, a stride, an offset),
  the kernel of a Conv reading a softmax (YOLOv8's distribution focal loss head: a fixed
  ``arange`` taking an expectation over bins),
  values that are computed rather than stored (a ``ConstantOfShape`` fill), and any tensor holding
  infinities or NaN (masks) or magnitudes of 1e30 and more (``finfo.min`` masks), whatever reads
  it.  Values read only where a translation needs them at load time (shapes, pads) are constants
  as before.

The user overrides the rules by name or glob pattern (``fnmatch``, matched against the ONNX name
and flowgrad's node name): ``unfreeze`` makes matching stored values trainable params (a
learned position embedding added to activations, say), ``freeze`` makes matching params
non-trainable.  :func:`set_trainable` does the same on any graph's params after loading (YAML
graphs too); a pattern that matches nothing is an error naming it.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..errors import FlowgradError, did_you_mean

#: ``op_type -> input positions`` holding a parametric op's learned tensors (None: every input)
WEIGHT_INPUTS: dict[str, tuple[int, ...] | None] = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "DeformConv": (1, 3),
    "Gemm": (0, 1, 2), "MatMul": (0, 1), "Einsum": None,
    "BatchNormalization": (1, 2), "InstanceNormalization": (1, 2),
    "LayerNormalization": (1, 2), "GroupNormalization": (1, 2), "RMSNormalization": (1,),
    "LSTM": (1, 2, 3, 7), "GRU": (1, 2, 3), "RNN": (1, 2, 3),
    "Gather": (0,), "PRelu": (1,), "CausalConvWithState": (1, 2),
}

#: ops whose output is "a layer's output" when one of their weight inputs is stored
LAYERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum"})

#: ops that move values without computing on them: a bias added after them is still the layer's
PASS_THROUGH = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"})

#: normalisations: a Mul or Add right after one is a learned scale or shift (Caffe's Scale layer)
NORMS = frozenset({"BatchNormalization", "InstanceNormalization", "LayerNormalization",
                   "GroupNormalization", "RMSNormalization", "LpNormalization",
                   "MeanVarianceNormalization"})

#: the elementwise ops through which a learned scale or shift is applied apart from its layer
AFFINE = frozenset({"Add", "Sub", "Mul"})

#: a magnitude that is a stand-in for infinity (``np.finfo(np.float32).min`` masks)
HUGE = 1e30

#: the kinds a stored value can be given
PARAM, FROZEN, STATE, CONST = "param", "frozen", "state", "const"


def structural_values(array: np.ndarray) -> bool:
    """Whether ``array`` holds values no trained weight holds: NaN, ±inf or ±1e30 and beyond
    (masks).  Such a tensor stays a constant whatever reads it, so an update cannot touch it and
    the non-finite check never blames it."""
    if array.dtype.kind != "f" or array.size == 0:
        return False
    with np.errstate(invalid="ignore"):
        return not bool(np.all(np.abs(array) < HUGE))


@dataclass
class Rules:
    """The fine-tuning rules' verdict on a model: :meth:`kind` per stored ONNX value, and the
    ``freeze``/``unfreeze`` patterns with which patterns matched (for :meth:`unmatched`)."""

    kinds: dict[str, str]
    affine_only: set[str]
    freeze: tuple[str, ...] = ()
    unfreeze: tuple[str, ...] = ()
    matched: set[str] = field(default_factory=set)

    def kind(self, name: str, array: np.ndarray, node_name: str | None = None) -> str:
        """``param``, ``frozen``, ``state`` or ``const`` for stored value ``name`` holding
        ``array`` (``node_name``: the flowgrad name it will get, also matched by patterns)."""
        kind = self.kinds.get(name, CONST)
        if array.dtype.kind != "f" or kind == "static":
            return CONST
        names = [name] + ([node_name] if node_name and node_name != name else [])
        unfrozen = self._matches(self.unfreeze, names)
        frozen = self._matches(self.freeze, names)
        if kind in (PARAM, CONST) and structural_values(array):
            return CONST                  # a mask: never updated, never blamed as non-finite
        if unfrozen and kind in (PARAM, CONST):
            return PARAM                  # the user's word wins, also over ``freeze``
        if kind == PARAM and name in self.affine_only and array.size == 1:
            return CONST
        return FROZEN if kind == PARAM and frozen else kind

    def _matches(self, patterns: Sequence[str], names: Sequence[str]) -> bool:
        hit = False
        for pattern in patterns:
            if any(fnmatch.fnmatchcase(n, pattern) for n in names):
                self.matched.add(pattern)
                hit = True
        return hit

    def unmatched(self) -> list[str]:
        return [p for p in (*self.freeze, *self.unfreeze) if p not in self.matched]


def classify(model, translation, static_of, freeze: Iterable[str] = (),
             unfreeze: Iterable[str] = ()) -> Rules:
    """Apply the rules above to ``model`` (an ``onnx.ModelProto``): which of its stored values
    (initializers and ``Constant`` node outputs) are learned, state or structural.
    ``translation(node)`` gives a node's import translation (or None) and ``static_of(node)``
    its load-time input positions."""
    graph = model.graph
    stored = {i.name for i in graph.initializer}
    stored.update(o for node in graph.node if node.op_type == "Constant" and not node.domain
                  for o in node.output if o)
    known = set(stored)            # values computable at load time (folded by the builder)
    producer: dict = {}
    consumers: dict[str, list] = {}
    for node in graph.node:
        if all(not i or i in known for i in node.input) and node.op_type != "Dropout":
            known.update(o for o in node.output if o)
        for o in node.output:
            if o:
                producer[o] = node
        for position, name in enumerate(node.input):
            if name:
                consumers.setdefault(name, []).append((node, position))

    def layer_output(v: str, depth: int = 0) -> bool:
        """Whether ``v`` is a layer's output (a parametric op with a stored weight), or such an
        output moved by reshapes/transposes, or scaled and shifted by learned affine params."""
        node = producer.get(v)
        if node is None or depth > 8 or v in known:
            return False
        if node.op_type in LAYERS:
            return any(i in known for i in node.input)
        if node.op_type in PASS_THROUGH and node.input:
            return layer_output(node.input[0], depth + 1)
        if node.op_type in AFFINE:
            return any(use_role(node, k) == PARAM for k in range(2) if node.input[k] in known)
        return False

    def normalised(v: str, depth: int = 0) -> bool:
        """Whether ``v`` is a normalisation's output or on its way to be: a normalisation op's
        output, ``x / sqrt(...)``, ``1 / sqrt(...)`` (jax2tf's rsqrt), or a product, sum or
        difference with one (where a spelled-out LayerNorm applies its gamma and beta)."""
        node = producer.get(v)
        if node is None or depth > 3 or v in known:
            return False
        if node.op_type in NORMS:
            return True
        made_by = [producer.get(i) for i in node.input]
        if node.op_type == "Div" and len(made_by) == 2:
            return made_by[1] is not None and made_by[1].op_type == "Sqrt"
        if node.op_type == "Reciprocal":
            return made_by[0] is not None and made_by[0].op_type == "Sqrt"
        if node.op_type in AFFINE:
            return any(normalised(i, depth + 1) for i in node.input if i not in known)
        return False

    def _after_softmax(v: str, depth: int = 0) -> bool:
        """Whether ``v`` is a softmax's output, moved by reshapes and transposes: a conv over
        bins of probabilities computes an expectation, with a fixed kernel."""
        node = producer.get(v)
        if node is None or depth > 4:
            return False
        if node.op_type == "Softmax":
            return True
        return node.op_type in PASS_THROUGH and bool(node.input) and \
            _after_softmax(node.input[0], depth + 1)

    def own_role(node, position: int) -> str:
        """The role of input ``position`` of ``node`` by the op alone (see the module doc)."""
        record = translation(node)
        if record is not None:
            if position in static_of(node):
                return "static"
            if position in record.state:
                return STATE
        domain = node.domain if node.domain not in ("", "ai.onnx") else ""
        if domain and domain != "flowgrad":
            return PARAM                      # a custom op: flowgrad cannot know better
        if node.op_type == "Conv" and node.input and _after_softmax(node.input[0]):
            return CONST            # YOLOv8's DFL: a fixed arange kernel taking an expectation
        if node.op_type in WEIGHT_INPUTS:
            positions = WEIGHT_INPUTS[node.op_type]
            return PARAM if positions is None or position in positions else CONST
        if node.op_type in AFFINE and len(node.input) == 2 and position < 2:
            other = node.input[1 - position]
            if other in known:
                return CONST
            if layer_output(other) or normalised(other):
                return PARAM
        return CONST

    roles: dict[tuple[int, int], str] = {}
    kinds_of: dict[str, str | None] = {}

    def use_role(node, position: int) -> str:
        """:func:`own_role`, except that an op that only moves values (a Slice, Concat,
        Reshape, Cast… of a stored weight on its way to a layer, as PyTorch's exporter writes
        the LSTM gate reordering) passes on the kind of what it produces: the stored tensor
        itself is the param, under the name the model gave it."""
        key = (id(node), position)
        if key not in roles:
            roles[key] = CONST                    # guards against cycles in a broken model
            role = own_role(node, position)
            if role == CONST and node.op_type in MOVING and position in MOVING[node.op_type]:
                role = combine([value_kind(o) for o in node.output if o]) or CONST
            roles[key] = role
        return roles[key]

    def value_kind(v: str) -> str | None:
        if v not in kinds_of:
            kinds_of[v] = None
            kinds_of[v] = combine([use_role(n, k) for n, k in consumers.get(v, [])])
        return kinds_of[v]

    kinds: dict[str, str] = {}
    affine_only: set[str] = set()
    for name in stored:
        kind = value_kind(name)
        kinds[name] = PARAM if kind is None else kind     # read by nothing: pruned later
        if kind == PARAM and all(n.op_type in AFFINE for n, k in consumers.get(name, [])
                                 if use_role(n, k) == PARAM):
            affine_only.add(name)
    return Rules(kinds, affine_only, tuple(freeze), tuple(unfreeze))


#: ops that move or retype values without computing on them: ``op_type -> data positions``
MOVING: dict[str, tuple[int, ...]] = {
    "Identity": (0,), "Cast": (0,), "CastLike": (0,), "Transpose": (0,), "Reshape": (0,),
    "Squeeze": (0,), "Unsqueeze": (0,), "Flatten": (0,), "Slice": (0,), "Split": (0,),
    "Concat": tuple(range(64)),
}


def combine(roles: list[str]) -> str | None:
    """The kind of a value from the roles of its uses: a param if any use learns it, state if
    every use is a statistic, a constant otherwise; None if nothing reads it."""
    if not roles:
        return None
    if all(r == "static" for r in roles):
        return "static"
    if PARAM in roles:
        return PARAM
    if all(r in (STATE, "static") for r in roles):
        return STATE
    return CONST


def _names(graph) -> dict[str, list[str]]:
    """``{param: [its flowgrad name, its ONNX name]}``: what a pattern may match."""
    out = {}
    for p in graph.params:
        names = [p]
        original = graph.extra(p, "onnx_name")
        if original and original != p:
            names.append(original)
        out[p] = names
    return out


def set_trainable(graph, freeze: Iterable[str] = (), unfreeze: Iterable[str] = ()
                  ) -> list[str]:
    """Freeze, then unfreeze, the params of ``graph`` whose name (or ONNX name) matches a glob
    pattern (so ``freeze=["*"], unfreeze=["fc.*"]`` trains the head only); returns the params
    changed.  State (running statistics) stays state: unfreezing
    it is refused.  A pattern matching no param is an error naming it (for an ONNX model, a
    structural constant is unfrozen at load time: ``load(model, unfreeze=[...])``)."""
    names = _names(graph)
    changed = []
    errors = []
    for patterns, value in ((list(freeze), False), (list(unfreeze), True)):
        for pattern in patterns:
            hits = [p for p, ns in names.items()
                    if any(fnmatch.fnmatchcase(n, pattern) for n in ns)]
            if not hits:
                errors.append(_no_match(graph, pattern, "freeze" if not value else "unfreeze"))
                continue
            for p in hits:
                if value and graph.extra(p, "state"):
                    errors.append(f"unfreeze {pattern!r}: '{p}' holds running statistics, "
                                  "updated by its op, not trained")
                    continue
                if graph.is_trainable(p) != value:
                    graph.set_trainable(p, value)
                    changed.append(p)
    if errors:
        raise FlowgradError("; ".join(errors))
    return changed


def _no_match(graph, pattern: str, what: str) -> str:
    consts = [c for c in graph.consts if fnmatch.fnmatchcase(c, pattern)
              or fnmatch.fnmatchcase(graph.extra(c, "onnx_name") or "", pattern)]
    if consts and what == "unfreeze":
        return (f"unfreeze {pattern!r}: matches constant(s) {', '.join(consts[:3])}, not params; "
                "a structural constant of an ONNX model is made trainable when loading it "
                "(flowgrad.load(model, unfreeze=[...]); `flowgrad train --unfreeze` does that)")
    params = graph.params
    shown = ", ".join(params[:8]) + (f" and {len(params) - 8} more" if len(params) > 8 else "")
    return (f"{what} {pattern!r}: matches no param{did_you_mean(pattern, params)} "
            f"(params: {shown or 'none'}; patterns are globs such as 'conv1*' or '*.bias')")


def trainable_report(graph, limit: int = 6) -> str:
    """One line per kind: which params train, which are frozen or state — what ``check`` shows."""
    train = [p for p in graph.params if graph.is_trainable(p)]
    frozen = [p for p in graph.params if not graph.is_trainable(p)
              and not graph.extra(p, "state")]
    state = [p for p in graph.params if not graph.is_trainable(p) and graph.extra(p, "state")]

    def some(names: list[str]) -> str:
        shown = ", ".join(names[:limit])
        return shown + (f" ... ({len(names) - limit} more)" if len(names) > limit else "")
    lines = [f"trainable params: {len(train)}" + (f" ({some(train)})" if train else "")]
    if frozen:
        lines.append(f"frozen params: {len(frozen)} ({some(frozen)})")
    if state:
        lines.append(f"state (running statistics): {len(state)} ({some(state)})")
    return "\n".join(lines)
