"""Control flow (flowgrad.ops.control): If, Loop and Scan with their bodies.

Each body is imported as a flowgrad graph by :mod:`flowgrad.onnx.subgraph` (outer-scope values
become extra inputs of the op, constants fold into the body).  An If whose condition is a
load-time constant is not an op at all: the taken branch is translated in place (exporters
emit such Ifs for shape checks).  An If whose branches hold a shape-driven If with branches of
different ranks (PyTorch's traced ``x.squeeze(d)``) becomes ``if_per_shape``: its branches stay
ONNX and are imported per shape signature at run time, when every shape is known.  A
loop-carried value or scan state whose shape changes from one iteration to the next is found by
importing the body again with the dims that changed unknown, until its shapes settle.
"""
from __future__ import annotations

import base64

import numpy as np
import onnx
import onnx.numpy_helper

from ...errors import FlowgradError
from ...op import Spec
from ..builder import ImportProblem
from ..subgraph import (_MAX_ROUNDS, InlineScope, NeedsShapes, declared_spec, free_names,
                        graph_attr, import_body, outer_values, shape_derived, translate)
from ..translations import Translations

T = Translations("control")


def _opaque(handler):
    """Mark an import handler as taking sequence / optional values (see subgraph.reads_opaque)."""
    handler.reads_opaque = True
    return handler


def _general(a: Spec, b: Spec, what: str) -> Spec:
    """The spec covering ``a`` and ``b`` (dims that differ unknown); same rank needed."""
    if a.ndim != b.ndim:
        raise ImportProblem(f"{what} has rank {a.ndim} before the body and {b.ndim} after it; "
                            "flowgrad needs a fixed rank")
    return Spec(tuple(x if x == y else None for x, y in zip(a.shape, b.shape)), a.dtype)


def _settle(b, proto, fixed: list, carried: list[Spec], rest: list, outer, what: str,
            carried_out: slice):
    """Import ``proto`` with formal inputs ``fixed + carried + rest`` until the carried specs
    cover what the body makes of them (its outputs ``carried_out``)."""
    for _ in range(_MAX_ROUNDS):
        graph, outs = import_body(b, proto, fixed + carried + rest, outer, what)
        made = [v.spec for v in outs[carried_out]]
        if len(made) != len(carried):
            raise ImportProblem(f"its {what} gives {len(outs)} output(s); too few for "
                                f"{len(carried)} carried value(s)")
        wider = [_general(s, m, f"carried value {i}") if s.dtype != object else s
                 for i, (s, m) in enumerate(zip(carried, made))]
        if wider == carried:
            return graph, outs
        carried = wider
    raise ImportProblem(f"the shapes of its carried values do not settle after {_MAX_ROUNDS} "
                        "imports of the body")


@T.imports("If", since=1)
@_opaque
def _if(b, a, ins):
    """If: inlined when ``cond`` is a constant, else flowgrad's ``if`` with both branches."""
    node = b.current
    cond = ins.need(0, "cond")
    branches = {k: graph_attr(node, k) for k in ("then_branch", "else_branch")}
    if cond.is_const:
        flat = np.asarray(cond.const).reshape(-1)
        if flat.size != 1:
            raise ImportProblem(f"cond must hold one value, not {flat.size}")
        return _inline(b, branches["then_branch" if bool(flat[0]) else "else_branch"])
    names = list(dict.fromkeys(free_names(branches["then_branch"])
                               + free_names(branches["else_branch"])))
    outer = outer_values(b, names)
    try:
        imported = {k: import_body(b, g, [], outer, k.replace("_", " "))
                    for k, g in branches.items()}
    except NeedsShapes as e:
        return _per_shape(b, cond, branches, names, outer, e)
    graphs = {k: g for k, (g, _) in imported.items()}
    if len(graphs["then_branch"].outputs) != len(node.output):
        raise ImportProblem(f"its branches give {len(graphs['then_branch'].outputs)} "
                            f"output(s), the node {len(node.output)}")
    made = [[v.spec for v in outs] for _, outs in imported.values()]
    differ = [i for i, (x, y) in enumerate(zip(*made)) if x.ndim != y.ndim or (
        x.dtype != y.dtype and not x.dtype.kind == y.dtype.kind == "f")]
    if differ and shape_derived(b.graph, cond):
        i = differ[0]
        detail = (f"output {i}: the then branch gives {made[0][i]}, the else branch "
                  f"{made[1][i]}, chosen by a condition computed from shapes the model leaves "
                  "free")
        raise NeedsShapes(detail + "; flowgrad needs one rank and dtype per value. Inside "
                          "another If it is imported per input shape; here, declare the graph "
                          "inputs' dims in the model (or load it with dynamic_batch=False if "
                          "they are declared)", detail=detail)
    return b.op("if", [cond] + [v for _, v in outer], name=b.final_name(0), **graphs)


def _per_shape(b, cond, branches: dict, names: list[str], outer, why: NeedsShapes):
    """The If as ``if_per_shape``: its branches (which hold a shape-driven If whose branches
    differ in rank, ``why``) are kept as ONNX and imported per shape signature of the outer
    values at run time.  The node's outputs take the types its branches declare: those are
    what the enclosing graph reads, so they must be declared and agree in rank."""
    node = b.current
    declared = []
    for i in range(len(node.output)):
        specs = []
        for k, g in branches.items():
            spec = declared_spec(g.output[i]) if i < len(g.output) else None
            if spec is None or spec.dtype == object:
                raise ImportProblem(f"{why.detail}; the If around it could import its branches per "
                                    f"input shape, but its {k.replace('_', ' ')} does not "
                                    f"declare the type and rank of output {i}: declare it")
            specs.append(spec)
        a, c = specs
        if a.ndim != c.ndim or a.dtype != c.dtype:
            raise ImportProblem(f"{why.detail}; and the branches of this If declare output {i} as "
                                f"{a} and {c}: flowgrad needs one rank and dtype")
        declared.append(Spec(tuple(x if x == y else None for x, y in zip(a.shape, c.shape)),
                             a.dtype))
    opaque = [n for n, v in outer if v.dtype == object]
    if opaque:
        raise ImportProblem(f"{why.detail}; the If around it could import its branches per "
                            f"input shape, but they read the sequence or optional value(s) "
                            f"{', '.join(map(repr, opaque))}, which that cannot pass")
    scope = b.values
    consts = [n for n in names if scope[n].is_const]
    taken = set(names) | _all_names(branches.values())

    def fresh(base: str) -> str:       # the stored If's own cond and outputs: names of no value
        while base in taken:           # the branches read or make
            base += "_"
        taken.add(base)
        return base
    inputs = [onnx.helper.make_tensor_value_info(fresh("#cond"), onnx.TensorProto.BOOL, None)]
    for name, value in outer:
        inputs.append(onnx.helper.make_tensor_value_info(
            name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
    outputs = [onnx.helper.make_tensor_value_info(
        fresh(f"#y{i}"), onnx.helper.np_dtype_to_tensor_dtype(s.dtype), list(s.shape))
        for i, s in enumerate(declared)]
    inits = [onnx.numpy_helper.from_array(np.asarray(scope[n].const), n) for n in consts]
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("If", [inputs[0].name], [o.name for o in outputs], name=node.name,
                               then_branch=branches["then_branch"],
                               else_branch=branches["else_branch"])],
        "if_per_shape", inputs, outputs, initializer=inits)
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in b.opset.items()],
        functions=list(b.functions.values()))
    return b.op("if_per_shape", [cond] + [v for _, v in outer], name=b.final_name(0),
                model=base64.b64encode(model.SerializeToString()).decode("ascii"))


def _inline(b, proto):
    """Translate a branch in place: its nodes join the enclosing graph."""
    node = b.current
    scope = b.values
    if len(proto.output) != len(node.output):
        raise ImportProblem(f"its taken branch gives {len(proto.output)} output(s), the node "
                            f"{len(node.output)}")
    local = InlineScope(scope)
    for init in proto.initializer:
        from ..tensors import to_array
        local[init.name] = b.const(to_array(init))
    b.values = local
    try:
        problems = translate(b, proto.node, local)
    finally:
        b.values = scope
        b.begin(node)
    if problems:
        raise ImportProblem("in its taken branch: " + "; ".join(problems))
    outs = []
    for vi in proto.output:
        if vi.name not in local:
            raise ImportProblem(f"its taken branch declares output '{vi.name}', which nothing "
                                "computes")
        outs.append(local[vi.name])
    return outs



def _all_names(graphs) -> set[str]:
    """Every value name ``graphs`` (and the subgraphs in them) declare, make or read."""
    found: set[str] = set()
    for g in graphs:
        found.update(vi.name for vi in (*g.input, *g.output, *g.value_info))
        found.update(t.name for t in g.initializer)
        for node in g.node:
            found.update(node.input)
            found.update(node.output)
            for attr in node.attribute:
                found |= _all_names([attr.g] if attr.type == onnx.AttributeProto.GRAPH
                                    else attr.graphs)
    return found


@T.imports("Loop", since=1)
@_opaque
def _loop(b, a, ins):
    """Loop -> flowgrad ``loop`` (M and cond optional; neither is refused: it never ends)."""
    node = b.current
    body = graph_attr(node, "body")
    trip, cond = ins.opt(0), ins.opt(1)
    if trip is None and cond is None:
        raise ImportProblem("has neither a trip count M nor a condition, so it never ends; "
                            "give one of them")
    initial = list(ins[2:])
    if any(v is None for v in initial):
        raise ImportProblem("a loop-carried initial value is empty; connect every one")
    n = len(initial)
    if len(body.input) != 2 + n:
        raise ImportProblem(f"its body takes {len(body.input)} input(s); it must take 2 + "
                            f"{n} (iteration, condition, carried values)")
    if len(body.output) != len(node.output) + 1:
        raise ImportProblem(f"its body gives {len(body.output)} output(s); it must give "
                            f"{len(node.output) + 1}: the condition, then one per output of "
                            "the node")
    appended = _appended(body, initial)
    if appended:
        body = _as_scan_outputs(body, appended)
        kept = [v for k, v in enumerate(initial) if k not in appended]
    else:
        kept = initial
    fixed = [declared_spec(body.input[0]) or Spec((), np.int64),
             declared_spec(body.input[1]) or Spec((), np.bool_)]
    outer = outer_values(b, free_names(body))
    graph, outs = _settle(b, body, fixed, [v.spec for v in kept], [], outer, "body",
                          slice(1, 1 + len(kept)))
    present = [v for v in (trip, cond) if v is not None]
    results = b.op("loop", present + kept + [v for _, v in outer], name=b.final_name(0),
                   body=graph, num_carried=len(kept), trip_count=trip is not None,
                   condition=cond is not None)
    if not appended:
        return results
    finals = iter(results[:len(kept)])
    scans = results[len(kept):len(results) - len(appended)]
    stacked = dict(zip(appended, results[len(results) - len(appended):]))
    out = []
    for k in range(n):
        if k not in stacked:
            out.append(next(finals))
            continue
        seq = b.op("split_to_sequence", [stacked[k]], axis=0, keepdims=False)[0]
        element = Spec(stacked[k].shape[1:], stacked[k].dtype)
        _record(b, seq, ("seq", element))
        _stacks(b)[_key(seq)] = stacked[k]
        out.append(seq)
    return out + list(scans)


def _stacks(b) -> dict:
    """Sequences a loop built by appending one tensor per iteration -> that tensor stacked
    (a differentiable value; see :func:`_appended`)."""
    table = getattr(b, "stacks", None)
    if table is None:
        table = b.stacks = {}
    return table


def _appended(body, initial) -> list[int]:
    """The carried values that start as an empty sequence and that the body only appends one
    tensor to per iteration — PyTorch's ``outs = []; for ...: outs.append(h)``.  Such a
    sequence is a scan output in disguise: imported as one, the tensors are stacked by the
    loop op and gradients flow through them (a sequence value takes none)."""
    found = []
    reads: dict[str, int] = {}
    for node in body.node:
        for name in node.input:
            reads[name] = reads.get(name, 0) + 1
    nested = set()
    for node in body.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                nested.update(free_names(attr.g))
    outputs = [vi.name for vi in body.output]
    for k, value in enumerate(initial):
        held = value.const[()] if value.is_const and value.const.dtype == object else None
        if not (isinstance(held, list) and not held):
            continue
        name_in, name_out = body.input[2 + k].name, body.output[1 + k].name
        makers = [nd for nd in body.node if name_out in nd.output]
        if len(makers) != 1:
            continue
        maker = makers[0]
        if (maker.op_type != "SequenceInsert" or maker.domain not in ("", "ai.onnx")
                or len([i for i in maker.input if i]) != 2 or maker.input[0] != name_in
                or len(maker.input) != 2):
            continue
        if reads.get(name_in) != 1 or name_in in nested or name_in in outputs:
            continue
        if reads.get(name_out) or name_out in nested or outputs.count(name_out) != 1:
            continue
        found.append(k)
    return found


def _as_scan_outputs(body, appended: list[int]):
    """A copy of ``body`` where each appended sequence ``k`` is a scan output instead: its
    input and its SequenceInsert go, the appended tensor is output after the scan outputs."""
    out = onnx.GraphProto()
    out.CopyFrom(body)
    gone_in = {body.input[2 + k].name for k in appended}
    gone_out = {body.output[1 + k].name for k in appended}
    tensors = []
    for k in appended:
        maker = next(nd for nd in body.node if body.output[1 + k].name in nd.output)
        tensors.append(maker.input[1])
    del out.input[:]
    out.input.extend(vi for vi in body.input if vi.name not in gone_in)
    del out.node[:]
    out.node.extend(nd for nd in body.node if not set(nd.output) & gone_out)
    del out.output[:]
    out.output.extend(vi for vi in body.output if vi.name not in gone_out)
    out.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors)
    return out


def _drop(spec: Spec, axis: int) -> Spec:
    return Spec(spec.shape[:axis] + spec.shape[axis + 1:], spec.dtype)


@T.imports("Scan", since=9)
@_opaque
def _scan(b, a, ins):
    """Scan-9 and later -> flowgrad ``scan``."""
    node = b.current
    body = graph_attr(node, "body")
    m = a.int("num_scan_inputs")
    n = len(ins) - m
    if m < 1 or n < 0:
        raise ImportProblem(f"num_scan_inputs is {m}; it must be between 1 and the number of "
                            f"inputs ({len(ins)})")
    if any(v is None for v in ins):
        raise ImportProblem("an input is empty; connect every state and scan input")
    attrs = {k: a.ints(k, []) for k in ("scan_input_axes", "scan_input_directions",
                                         "scan_output_axes", "scan_output_directions")}
    axes = attrs["scan_input_axes"] or [0] * m
    if len(axes) != m:
        raise ImportProblem(f"scan_input_axes has {len(axes)} entries for {m} scan inputs")
    slices = []
    for j, (v, axis) in enumerate(zip(ins[n:], axes)):
        if not -v.ndim <= axis < v.ndim:
            raise ImportProblem(f"scan_input_axes[{j}] = {axis} is out of range for a "
                                f"{v.ndim}-d input")
        slices.append(_drop(v.spec, axis % v.ndim))
    if len(body.input) != n + m:
        raise ImportProblem(f"its body takes {len(body.input)} input(s); it must take {n + m} "
                            "(states, then one slice per scan input)")
    outer = outer_values(b, free_names(body))
    graph, outs = _settle(b, body, [], [v.spec for v in ins[:n]], slices, outer, "body",
                          slice(0, n))
    if len(graph.outputs) != len(node.output):
        raise ImportProblem(f"its body gives {len(graph.outputs)} output(s), the node "
                            f"{len(node.output)}")
    return b.op("scan", list(ins) + [v for _, v in outer], name=b.final_name(0), body=graph,
                num_scan_inputs=m, num_outer=len(outer),
                **{k: v for k, v in attrs.items() if v})


@T.imports("Scan", since=8)
@_opaque
def _scan8(b, a, ins):
    """Scan-8: a leading batch axis on every input, time on axis 1 of the scan inputs.
    ``sequence_lens`` is accepted when it is a constant giving every row the full length."""
    node = b.current
    body = graph_attr(node, "body")
    m = a.int("num_scan_inputs")
    lens, rest = ins.opt(0), list(ins[1:])
    n = len(rest) - m
    if m < 1 or n < 0 or any(v is None for v in rest):
        raise ImportProblem(f"needs every state and its {m} scan input(s) connected")
    for v in rest:
        if v.ndim < 1:
            raise ImportProblem("Scan-8 inputs have a leading batch axis; a scalar has none")
    if lens is not None:
        length = rest[n].shape[1] if rest[n].ndim > 1 else None
        values = np.asarray(b.static(lens, "sequence_lens")).reshape(-1)
        if length is None or not np.all(values == length):
            raise ImportProblem("flowgrad's Scan-8 runs every sequence to its full length; "
                                "give no sequence_lens, or full lengths (or use Scan-9)")
    directions = a.ints("directions", [])
    states = [_drop(v.spec, 0) for v in rest[:n]]
    slices = []
    for v in rest[n:]:
        if v.ndim < 2:
            raise ImportProblem("a Scan-8 scan input needs a batch and a time axis")
        slices.append(_drop(_drop(v.spec, 0), 0))
    if len(body.input) != n + m:
        raise ImportProblem(f"its body takes {len(body.input)} input(s); it must take {n + m}")
    outer = outer_values(b, free_names(body))
    graph, outs = _settle(b, body, [], states, slices, outer, "body", slice(0, n))
    return b.op("scan", rest + [v for _, v in outer], name=b.final_name(0), body=graph,
                num_scan_inputs=m, num_outer=len(outer), batch_axis=True,
                **({"scan_input_directions": directions} if directions else {}))


def _refuse_export(c) -> None:
    raise FlowgradError(f"node '{c.name}': exporting '{c.op.type}' to ONNX is not supported "
                        "yet; export the graph's other outputs, or keep the original model")


# -- export: bodies become ONNX subgraphs ----------------------------------------------------

def _export_body(c, graph, num_formal: int, outer_names: list[str]) -> onnx.GraphProto:
    """``graph`` (a body) as an ONNX subgraph of the node being exported: its formal inputs
    stay inputs, its outer-value inputs become references to the enclosing graph's values
    ``outer_names``, and every other name gets a prefix unique in the model (ONNX values are
    assigned once across all graphs)."""
    from ..export import export_onnx
    inputs = graph.inputs
    for name in inputs:
        if graph.spec_of(name).dtype == object:
            raise FlowgradError(f"node '{c.name}': its body carries a sequence or optional "
                                f"value ('{name}'); exporting those is not supported yet")
    floats = [c.model.dtypes[v] for v in c.ins if v and c.model.dtypes.get(v) is not None
              and np.dtype(c.model.dtypes[v]).kind == "f"]
    float_dtype = floats[0] if floats else np.float32
    try:
        proto = export_onnx(graph, float_dtype=float_dtype)
    except FlowgradError as e:
        raise FlowgradError(f"node '{c.name}': its body cannot be exported: {e}") from None
    if proto.functions:
        raise FlowgradError(f"node '{c.name}': its body needs model-local functions; "
                            "exporting those inside a body is not supported yet")
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            c.model.min_opset = max(c.model.min_opset, entry.version)
        else:
            c.model.use_domain(entry.domain, entry.version)
    body = proto.graph
    prefix = c.model.fresh(f"{c.name}_body") + "/"
    rename = {name: outer for name, outer in zip(inputs[num_formal:], outer_names)}

    def new(name: str) -> str:
        if not name:
            return name
        if name not in rename:
            rename[name] = c.model.fresh(prefix + name)
        return rename[name]

    def walk(g: onnx.GraphProto) -> None:
        for vi in (*g.input, *g.output, *g.value_info):
            vi.name = new(vi.name)
        for init in g.initializer:
            init.name = new(init.name)
        for node in g.node:
            node.input[:] = [new(n) for n in node.input]
            node.output[:] = [new(n) for n in node.output]
            node.name = c.model.node_name(prefix + node.name)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        walk(sub)
    exported = {vi.name: vi for vi in body.input}
    formal = []
    for name in inputs[:num_formal]:
        vi = exported.get(name)
        if vi is None:          # a formal input the body does not read: ONNX still wants it
            spec = graph.spec_of(name)
            dtype = float_dtype if spec.dtype.kind == "f" else spec.dtype
            vi = onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
                [None if d is None else d for d in spec.shape])
        formal.append(vi)
    del body.input[:]
    body.input.extend(formal)
    for vi in body.input:       # the exporter's symbolic batch "N" means nothing here
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                d.Clear()
    walk(body)
    made = {o for node in body.node for o in node.output} | {i.name for i in body.initializer}
    # runtimes want each body output made inside it, and named once (a Scan body giving one
    # value as its state and its scan output ran wrong in onnxruntime): else an Identity
    taken: set[str] = set()
    for vi in body.output:
        if vi.name not in made or vi.name in taken:
            copy = c.model.fresh(prefix + vi.name.rsplit("/", 1)[-1] + "_out")
            body.node.append(onnx.helper.make_node("Identity", [vi.name], [copy],
                                                   name=c.model.node_name(copy)))
            vi.name = copy
        taken.add(vi.name)
    return body


@T.exports("if")
def _export_if(c):
    op = c.op
    branches = {k: _export_body(c, getattr(op, k), 0, list(c.ins[1:])) for k in op.body_attrs}
    c.node("If", [c.ins[0]], c.outs, **branches)


@T.exports("loop")
def _export_loop(c):
    op = c.op
    head, n = op._head, op.num_carried
    trip = c.ins[0] if op.trip_count else ""
    cond = c.ins[head - 1] if op.condition else ""
    carried = list(c.ins[head:head + n])
    body = _export_body(c, op.body, 2 + n, list(c.ins[head + n:]))
    c.node("Loop", [trip, cond, *carried], c.outs, body=body)


@T.exports("scan")
def _export_scan(c):
    op = c.op
    if op.batch_axis:
        raise FlowgradError(f"node '{c.name}': a Scan-8 scan (batch_axis) has no form at the "
                            "export opset; rewrite it without the batch axis")
    n, m = op.num_state, op.num_scan_inputs
    body = _export_body(c, op.body, n + m, list(c.ins[n + m:]))
    attrs = {k: list(getattr(op, k)) for k in ("scan_input_axes", "scan_input_directions",
                                               "scan_output_axes", "scan_output_directions")
             if getattr(op, k)}
    c.node("Scan", list(c.ins[:n + m]), c.outs, body=body, num_scan_inputs=m, **attrs)


# -- sequences and optionals (flowgrad.ops.sequence) -----------------------------------------
#
# A sequence or optional is opaque to shape inference (Spec object[]), so the translations keep
# what is known of its contents beside the graph: ``b.contents`` maps a value (its node and
# port, or a constant's id) to a descriptor -- a Spec for a tensor, ("seq", element) for a
# sequence, ("opt", inner) for an optional, None where unknown.  Where nothing was recorded (a
# graph input, a loop's output), the model's declared type of the value is read instead.

def _key(value):
    return ("const", id(value.const)) if value.is_const else (value.node, value.port)


def _contents(b) -> dict:
    table = getattr(b, "contents", None)
    if table is None:
        table = b.contents = {}
    return table


def _describe(type_proto):
    """A TypeProto as a descriptor (see above)."""
    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type":
        from ..subgraph import declared_spec
        vi = onnx.ValueInfoProto()
        vi.type.CopyFrom(type_proto)
        return declared_spec(vi)
    if kind == "sequence_type":
        return ("seq", _describe(type_proto.sequence_type.elem_type))
    if kind == "optional_type":
        return ("opt", _describe(type_proto.optional_type.elem_type))
    return None


def _declared_types(b) -> dict:
    """Every value type the model declares (main graph and all subgraphs), by name."""
    importer = b.importer
    table = getattr(importer, "declared_types", None)
    if table is None:
        table = {}

        def walk(graph):
            for vi in (*graph.input, *graph.output, *graph.value_info):
                if vi.type.WhichOneof("value"):
                    table.setdefault(vi.name, vi.type)
            for node in graph.node:
                for attr in node.attribute:
                    if attr.type == onnx.AttributeProto.GRAPH:
                        walk(attr.g)
                    elif attr.type == onnx.AttributeProto.GRAPHS:
                        for g in attr.graphs:
                            walk(g)
        walk(importer.model.graph)
        importer.declared_types = table
    return table


def _of(b, value, name: str):
    """What ``value`` (the ONNX value ``name``) holds: recorded, else declared, else None."""
    known = _contents(b).get(_key(value))
    if known is not None:
        return known
    if value.spec != _OPAQUE:
        return value.spec
    declared = _declared_types(b).get(name)
    return None if declared is None else _describe(declared)


def _record(b, value, descriptor):
    if descriptor is not None:
        _contents(b)[_key(value)] = descriptor
    return value


def _widen(a, c):
    """The descriptor covering both (tensor dims that differ unknown; None if unrelated)."""
    if a is None or c is None:
        return None
    if isinstance(a, Spec) and isinstance(c, Spec):
        if a.ndim != c.ndim:
            return None
        return Spec(tuple(x if x == y else None for x, y in zip(a.shape, c.shape)), a.dtype)
    if isinstance(a, tuple) and isinstance(c, tuple) and a[0] == c[0]:
        return (a[0], _widen(a[1], c[1]))
    return None


def _tensor_attrs(spec, what: str) -> dict:
    if not isinstance(spec, Spec):
        raise ImportProblem(f"flowgrad needs the rank and dtype of {what}; declare the value's "
                            "type in the model (value_info)")
    return {"shape": list(spec.shape), "dtype": spec.dtype.name}


_OPAQUE = Spec((), np.dtype(object))


@T.imports("SequenceEmpty", since=11)
def _sequence_empty(b, a, ins):
    from ...ops.sequence import box
    from ..tensors import DTYPES
    dtype = DTYPES.get(a.int("dtype", onnx.TensorProto.FLOAT))
    value = b.const(box([]))
    return [_record(b, value, ("seq", None if dtype is None else None))]


@T.imports("SequenceConstruct", since=11)
def _sequence_construct(b, a, ins):
    items = list(ins)
    if any(v is None for v in items) or not items:
        raise ImportProblem("needs one or more tensors, none empty")
    out = b.final("sequence_construct", items)[0]
    element = items[0].spec
    for v in items[1:]:
        element = _widen(element, v.spec)
    return [_record(b, out, ("seq", element))]


def _seq_in(b, ins, i=0):
    seq = ins.need(i, "input_sequence")
    if seq.spec != _OPAQUE:
        raise ImportProblem(f"input {i} must be a sequence, not a tensor {seq.spec}")
    described = _of(b, seq, b.current.input[i])
    element = described[1] if isinstance(described, tuple) and described[0] == "seq" else None
    return seq, element


@T.imports("SequenceInsert", since=11)
@_opaque
def _sequence_insert(b, a, ins):
    seq, element = _seq_in(b, ins)
    tensor = ins.need(1, "tensor")
    out = b.final("sequence_insert", [seq, tensor, ins.opt(2)])[0]
    merged = tensor.spec if element is None else _widen(element, tensor.spec)
    if element is None:      # earlier elements are unknown: keep the rank only
        merged = Spec((None,) * tensor.ndim, tensor.dtype)
    return [_record(b, out, ("seq", merged))]


@T.imports("SequenceErase", since=11)
@_opaque
def _sequence_erase(b, a, ins):
    seq, element = _seq_in(b, ins)
    out = b.final("sequence_erase", [seq, ins.opt(1)])[0]
    return [_record(b, out, ("seq", element))]


@T.imports("SequenceLength", since=11)
@_opaque
def _sequence_length(b, a, ins):
    seq, _ = _seq_in(b, ins)
    return b.final("sequence_length", [seq])


@T.imports("SequenceAt", since=11)
@_opaque
def _sequence_at(b, a, ins):
    seq, element = _seq_in(b, ins)
    stacked = _stacks(b).get(_key(seq))
    if stacked is not None:         # an element of a list a loop appended to: a row of it
        return b.final("gather", [stacked, ins.need(1, "position")], axis=0)
    if element is None:
        declared = _declared_types(b).get(b.current.output[0])
        element = None if declared is None else _describe(declared)
    return b.final("sequence_at", [seq, ins.need(1, "position")],
                   **_tensor_attrs(element, "the sequence's elements"))


@T.imports("ConcatFromSequence", since=11)
@_opaque
def _concat_from_sequence(b, a, ins):
    seq, element = _seq_in(b, ins)
    axis, new_axis = a.int("axis"), a.bool("new_axis", False)
    stacked = _stacks(b).get(_key(seq))
    if stacked is not None and new_axis and -stacked.ndim <= axis < stacked.ndim:
        # torch.stack of a list a loop appended to: the loop's stacked tensor, moved
        axis %= stacked.ndim
        if axis == 0:
            return [stacked]
        perm = list(range(1, stacked.ndim))
        perm.insert(axis, 0)
        return b.final("transpose", [stacked], perm=perm)
    if not isinstance(element, Spec):
        declared = _declared_types(b).get(b.current.output[0])
        out_spec = None if declared is None else _describe(declared)
        attrs = _tensor_attrs(out_spec, "the concatenation")
    else:
        rank = element.ndim + int(new_axis)
        if not -rank <= axis < rank:
            raise ImportProblem(f"axis {axis} is out of range for {element.ndim}-d elements")
        shape = list(element.shape)
        if new_axis:
            shape.insert(axis % rank, None)
        else:
            shape[axis % rank] = None
        attrs = {"shape": shape, "dtype": element.dtype.name}
    return b.final("concat_from_sequence", [seq], axis=axis, new_axis=new_axis, **attrs)


@T.imports("SplitToSequence", since=11, static=())
def _split_to_sequence(b, a, ins):
    x = ins.need(0, "input")
    split = ins.opt(1)
    axis, keepdims = a.int("axis", 0), a.bool("keepdims", True)
    if not -x.ndim <= axis < x.ndim:
        raise ImportProblem(f"axis {axis} is out of range for a {x.ndim}-d input")
    out = b.final("split_to_sequence", [x, split], axis=axis, keepdims=keepdims)[0]
    shape = list(x.shape)
    if split is None and not keepdims:
        del shape[axis % x.ndim]
    else:
        shape[axis % x.ndim] = None
    return [_record(b, out, ("seq", Spec(tuple(shape), x.dtype)))]


@T.imports("Optional", since=15)
@_opaque
def _optional(b, a, ins):
    x = ins.opt(0)
    if x is None:
        from ...ops.sequence import box
        declared = None
        for attr in b.current.attribute:
            if attr.name == "type" and attr.type == onnx.AttributeProto.TYPE_PROTO:
                declared = _describe(attr.tp)
        return [_record(b, b.const(box(None)), ("opt", declared))]
    out = b.final("optional", [x])[0]
    return [_record(b, out, ("opt", _of(b, x, b.current.input[0])))]


@T.imports("OptionalHasElement", since=15)
@_opaque
def _optional_has_element(b, a, ins):
    x = ins.opt(0)
    if x is None:
        return [b.const(np.array(False))]
    if x.spec != _OPAQUE:
        return [b.const(np.array(True))]
    return b.final("optional_has_element", [x])


@T.imports("OptionalGetElement", since=15)
@_opaque
def _optional_get_element(b, a, ins):
    x = ins.need(0, "input")
    if x.spec != _OPAQUE:
        return [x]
    described = _of(b, x, b.current.input[0])
    inner = described[1] if isinstance(described, tuple) and described[0] == "opt" else \
        described if isinstance(described, tuple) else None
    if inner is None:
        declared = _declared_types(b).get(b.current.output[0])
        inner = None if declared is None else _describe(declared)
    if isinstance(inner, tuple):
        out = b.final("optional_get_element", [x])[0]
        return [_record(b, out, inner)]
    return b.final("optional_get_element", [x], **_tensor_attrs(inner, "the optional's value"))


T.exports("sequence_construct", "sequence_insert", "sequence_erase", "sequence_length",
          "sequence_at", "concat_from_sequence", "split_to_sequence", "optional",
          "optional_has_element", "optional_get_element")(_refuse_export)


@T.imports("SequenceMap", since=17)
@_opaque
def _sequence_map(b, a, ins):
    """SequenceMap -> flowgrad ``sequence_map``: each sequence input gives its element's
    Spec to the body's formal input (known from how it was built, else declared)."""
    node = b.current
    body = graph_attr(node, "body")
    if ins.opt(0) is None or any(v is None for v in ins):
        raise ImportProblem("needs its input sequence and every additional input")
    if len(body.input) != len(ins):
        raise ImportProblem(f"its body takes {len(body.input)} input(s); it must take "
                            f"{len(ins)}, one per input")
    formal = []
    for i, (value, vi) in enumerate(zip(ins, body.input)):
        if value.spec == _OPAQUE:
            _, element = _seq_in(b, ins, i)
            formal.append(_widen(element, declared_spec(vi)) or element or declared_spec(vi))
        else:
            formal.append(value.spec)
    outer = outer_values(b, free_names(body))
    graph, outs = import_body(b, body, formal, outer, "body")
    if len(outs) != len(node.output):
        raise ImportProblem(f"its body gives {len(outs)} output(s), the node "
                            f"{len(node.output)}")
    results = b.op("sequence_map", list(ins) + [v for _, v in outer], name=b.final_name(0),
                   body=graph, num_outer=len(outer))
    return [_record(b, r, ("seq", o.spec)) for r, o in zip(results, outs)]


T.exports("sequence_map")(_refuse_export)


@T.exports("if_per_shape")
def _export_if_per_shape(c):
    """Refused: the branches are kept as ONNX at the source model's opset, and re-writing them
    at the export opset would need ONNX's version converter on every op inside."""
    raise FlowgradError(f"node '{c.name}': an If imported per input shape (if_per_shape) "
                        "cannot be exported yet; keep the original model, or export the "
                        "graph's other outputs")
