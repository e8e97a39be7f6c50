"""Control flow: ``if``, ``loop`` and ``scan``, ops that run a *body* graph, with backward.

The three ops follow ONNX's If, Loop and Scan (``if_per_shape`` is an If whose branches are
imported per input shape at run time: see :class:`IfPerShape`).  Each holds its body (or two
branches) as a flowgrad :class:`~flowgrad.graph.Graph` whose inputs are, in order, the ONNX
body's formal inputs and then every value of the enclosing graph the body reads by name (its
*outer-scope* values).  The op's own inputs are the ONNX node's inputs followed by those outer
values, so in the enclosing graph an outer value is an ordinary edge into the op: a param read
inside a loop body is a param of the model, and its gradient arrives through the op's backward.

Why a body is a compiled plan run once per iteration: the body is a graph like any other, so
it runs with the same programs as the enclosing plan (:mod:`flowgrad.plan`), compiled once per
float precision and cached on the op.  Each iteration's forward keeps its contexts (what the
body's ops saved); backward replays the iterations in reverse, seeding the body's outputs with
the gradients of the next iteration's inputs (loop-carried state) and of the stacked scan
outputs, and summing the gradients of the outer values over the iterations.  Because forward
records how many iterations actually ran, backward works for every loop that ended — a trip
count, a data-dependent condition, or both; the condition itself takes no gradient (it is
discrete), as PyTorch's autograd through a Python ``while`` would do.

Ports are per node: a loop with two carried values and one outer value has inputs ``M, cond,
v0, v1, outer0``; inputs that are not floats (trip counts, conditions, indices, sequences) take
no gradient (``no_grad_inputs``), so a trip count computed from an activation's shape does not
ask a gradient of ``shape``.

The body attribute is a Graph when built by the ONNX importer, and its plain form (inputs,
constants, nodes, outputs as lists and dicts, :func:`graph_to_plain`) in ``config()``, so a
graph with control flow is written to YAML and read back like any other op.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import AttrError, FlowgradError
from ..op import Attr, Op, ShapeError, Spec, normalize_axis

if TYPE_CHECKING:     # the graph module imports networkx: listing ops must not
    from ..graph import Graph


class BodyError(Exception):
    """A body failed: deliberately not a FlowgradError, so the enclosing plan wraps it with the
    name of the control-flow node (the body's own message names the node inside it)."""


def _runtime():
    """The plan's machinery a body runs with (imported on first use: the plan imports the
    ops), kept in a namespace so that a run, called per iteration, does not import."""
    global _RUNTIME
    if _RUNTIME is None:
        from types import SimpleNamespace

        from ..backend import CPUBackend
        from ..plan.memory import BufferPool
        from ..plan.programs import compile_forward
        from ..plan.run import feed, run_forward
        _RUNTIME = SimpleNamespace(CPUBackend=CPUBackend, BufferPool=BufferPool,
                                   compile_forward=compile_forward, feed=feed,
                                   run_forward=run_forward)
    return _RUNTIME


_RUNTIME = None


# -- plain form of a body graph ----------------------------------------------------------

def graph_to_plain(graph: Graph) -> dict:
    """``graph`` as plain lists and dicts: what YAML can hold and :func:`graph_from_plain`
    reads back.  ``branch`` nodes are looked through (a prepared graph gives the same form)."""
    def source(src):
        if src is None:
            return None
        node, port = src
        while graph.is_op(node) and graph.is_branch(node):
            node, port = graph.input_sources(node)[0]
        return [node, port]

    inputs, leaves, nodes = [], [], []
    for name in graph.ordered_nodes():
        if graph.is_input(name):
            spec = graph.spec_of(name)
            inputs.append([name, list(spec.shape), spec.dtype.name])
        elif graph.is_leaf(name):
            value = np.asarray(graph.value_of(name))
            if value.dtype == object:
                raise FlowgradError(f"constant '{name}' of a body holds a Python object; it "
                                    "cannot be written out")
            leaves.append([name, value.dtype.name, list(value.shape), value.ravel().tolist()])
        elif not graph.is_branch(name):
            op = graph.op_of(name)
            nodes.append([name, op.type, [source(s) for s in graph.input_sources(name)],
                          _plain(op.config())])
    outputs = []
    for ref in graph.outputs:
        node, port = graph.resolve(ref)
        outputs.append(source((node, port)))
    return {"name": graph.name, "inputs": inputs, "consts": leaves, "nodes": nodes,
            "outputs": outputs}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def graph_from_plain(data: Any, what: str) -> Graph:
    """The body graph described by ``data`` (see :func:`graph_to_plain`); ops come from the
    default registry.  An AttrError names what is malformed."""
    from ..plugins import default_registry
    registry = default_registry()
    try:
        from ..graph import Graph
        graph = Graph(str(data.get("name", what)))
        for name, shape, dtype in data["inputs"]:
            graph.add_input(name, Spec(tuple(shape), np.dtype(dtype)))
        for name, dtype, shape, values in data.get("consts", []):
            graph.add_const(name, np.asarray(values, dtype=np.dtype(dtype)).reshape(shape))
        for name, op_type, sources, attrs in data.get("nodes", []):
            graph.add_op(name, registry.get(op_type)(**attrs), num_inputs=len(sources))
            for port, src in enumerate(sources):
                if src is not None:
                    graph.connect(src[0], int(src[1]), name, port)
        for node, port in data["outputs"]:
            graph.outputs.append(node if port == 0 else f"{node}.{port}")
    except FlowgradError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise AttrError(f"attribute '{what}' is not a body graph (a mapping with inputs, "
                        f"consts, nodes and outputs): {type(e).__name__}: {e}", attr=what) \
            from None
    return graph


# -- running a body ------------------------------------------------------------------------

class Body:
    """A body graph compiled, per float precision, into the plan's programs; runs one
    iteration at a time and keeps what each iteration's backward needs."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.input_specs = [graph.spec_of(n) for n in graph.inputs]
        self._compiled: dict[np.dtype, dict] = {}
        #: per dtype, the (pool, backend) evaluation runs share: see :meth:`run`
        self._eval_memory: dict[np.dtype, tuple] = {}

    @property
    def num_inputs(self) -> int:
        return len(self.input_specs)

    @property
    def num_outputs(self) -> int:
        return len(self.graph.outputs)

    def output_specs(self) -> list[Spec]:
        graph = self._prepared(np.dtype(np.float32))["graph"]
        out = []
        for ref in graph.outputs:
            node, port = graph.resolve(ref)
            out.append(graph.specs(node)[port])
        return out

    def _prepared(self, dtype: np.dtype) -> dict:
        hit = self._compiled.get(dtype)
        if hit is None:
            from ..passes import prepare
            from ..plan.params import ParamStore
            from ..plan.programs import Layout
            graph = prepare(self.graph)
            layout = Layout(graph)
            store = ParamStore(graph, dtype, layout.order)
            leaves = [(layout.slot[(n, 0)], v) for n, v in store.leaves()]
            template: list[Any] = [None] * layout.num_slots
            for slot, value in leaves:
                template[slot] = value
            hit = self._compiled[dtype] = {
                "graph": graph, "layout": layout, "store": store, "leaves": leaves,
                "template": template, "names": graph.inputs, "forward": {}, "backward": {},
                "fed": {}}
        return hit

    @staticmethod
    def signature(values) -> tuple:
        """``(shape, dtype)`` of each value (None where it is not an array).

        Why: what a run depends on besides the values themselves — the precision
        (:meth:`dtype_of`), an ``if_per_shape`` branch, whether :meth:`_feed` may skip its
        checks — is a function of this tuple, and reading it costs microseconds per value: an If
        around a whole model is fed tens of values per call (silero VAD's: 34), so it is read
        once per call and passed along."""
        return tuple([(v.shape, v.dtype) if type(v) is np.ndarray else None for v in values])

    @staticmethod
    def dtype_of(values, signature: tuple | None = None) -> np.dtype:
        """The precision to run in: the widest of the float arrays fed (float32 if none).
        The widest, because a value made from a float32 constant (``ConstantOfShape``) may
        sit beside float64 activations in a float64 plan, and a gradient check needs all of
        the body in float64.  ``signature`` (:meth:`signature` of ``values``) saves reading
        the values again."""
        if signature is not None and None not in signature:
            floats = [d for d in {d for _, d in signature} if d.kind == "f"]
        else:
            floats = [v.dtype for v in values
                      if isinstance(v, np.ndarray) and v.dtype.kind == "f"]
        return np.result_type(*floats) if floats else np.dtype(np.float32)

    def run(self, feeds: list, dtype: np.dtype, grad: bool, training: bool = False,
            rng: Any = None, signature: tuple | None = None) -> tuple[list, Any]:
        """One run on ``feeds`` (one value per body input; ``signature``: their
        :meth:`signature`, if the caller has it); returns the outputs and, with ``grad``, the
        record :meth:`backward` needs."""
        c = self._compiled.get(dtype) or self._prepared(dtype)
        rt = _runtime()
        layout, graph = c["layout"], c["graph"]
        fuse = not grad and not training
        program = c["forward"].get(fuse)
        if program is None:
            program = c["forward"][fuse] = rt.compile_forward(layout, tuple(graph.outputs), fuse)
        vals: list[Any] = c["template"].copy()
        ctxs: list = [None] * len(layout.steps) if grad else []
        # Evaluation runs share one pool (and the backend bound to it) across calls: a fresh
        # pool per call hands every activation fresh memory, and the page faults of those first
        # touches cost more than the whole body on small models (silero VAD runs its model in
        # an If).  Sharing is safe because an evaluation run ends (``end_run``) before it
        # returns and the pool recycles only buffers nothing else refers to.  A run with
        # gradient keeps its pool in the record until its backward, so it gets its own.  The
        # backend knows the body's constants, which no run changes (``CPUBackend.prepared``).
        if grad:
            pool = rt.BufferPool()
            backend = rt.CPUBackend(pool, c["store"].constants())
        else:
            memory = self._eval_memory.get(dtype)
            if memory is None:
                pool = rt.BufferPool()
                memory = self._eval_memory[dtype] = (pool, rt.CPUBackend(
                    pool, c["store"].constants()))
            pool, backend = memory
        try:
            self._feed(c, program, fuse, dtype, vals, feeds,
                       self.signature(feeds) if signature is None else signature)
            rt.run_forward(program, vals, ctxs, grad, training,
                           rng if rng is not None else np.random.default_rng(0),
                           backend, pool, c["store"])
        except FlowgradError as e:
            raise BodyError(f"in body '{graph.name}': {e}") from None
        slots = program.output_slots
        outs = [vals[slots[ref]] for ref in graph.outputs]
        record = ((dtype, program, ctxs, dict(zip(c["names"], feeds)), outs, pool) if grad
                  else None)
        return outs, record

    @staticmethod
    def _feed(c: dict, program, fuse: bool, dtype, vals: list, feeds: list,
              signature: tuple) -> None:
        """Put the fed values in their slots: the plan's ``feed`` (checks and casts), or, when
        the values have the same :meth:`signature` as in an earlier run whose values ``feed``
        passed through unchanged, straight into the slots.

        Why: a body run in a loop or an If around a whole model is fed tens of values per
        call (silero VAD's If: 34), and checking each costs microseconds that an unchanged
        signature cannot change the outcome of."""
        known = c["fed"].get(fuse)
        if known is not None and known[0] == signature:
            for i, slot in known[1]:
                vals[slot] = feeds[i]
            return
        names = c["names"]
        _runtime().feed(c["layout"], dtype, vals,
                        {k: v for k, v in zip(names, feeds) if k in program.feeds}, program)
        slots = c["layout"].input_slots
        pairs = [(i, slots[name]) for i, name in enumerate(names) if name in program.feeds]
        if None not in signature and all(vals[slot] is feeds[i] for i, slot in pairs):
            c["fed"][fuse] = (signature, pairs)     # (nothing was cast)

    def backward(self, record, grads: list, wrt: list[bool]) -> list:
        """Gradients of the body inputs marked in ``wrt`` (None elsewhere) given one gradient
        (or None) per output, through the run ``record`` came from."""
        from ..plan.programs import compile_backward
        from ..plan.run import run_backward
        dtype, program, ctxs, named, outs, pool = record
        c = self._prepared(dtype)
        layout, graph = c["layout"], c["graph"]
        seeds: dict[str, np.ndarray] = {}
        for ref, g, out in zip(graph.outputs, grads, outs):
            if g is None or np.asarray(out).dtype.kind != "f":
                continue
            g = np.asarray(g, dtype=np.asarray(out).dtype)
            seeds[ref] = g if ref not in seeds else seeds[ref] + g
        names = c["names"]
        targets = tuple(n for n, w, s in zip(names, wrt, self.input_specs)
                        if w and s.dtype.kind == "f")
        result: list = [None] * len(names)
        got: dict[str, np.ndarray] = {}
        if seeds and targets:
            key = (tuple(seeds), targets)
            bprog = c["backward"].get(key)
            try:
                if bprog is None:
                    bprog = c["backward"][key] = compile_backward(
                        layout, program, tuple(seeds), targets, [])
                g: list[Any] = [None] * layout.num_slots
                for ref, value in seeds.items():
                    g[bprog.seed_slots[ref]] = value
                run_backward(graph, bprog, ctxs, g, pool)
            except FlowgradError as e:
                raise BodyError(f"in body '{graph.name}': {e}") from None
            got = {n: g[bprog.leaf_slots[n]] for n in targets}
        for i, (name, w) in enumerate(zip(names, wrt)):
            if not w:
                continue
            value = got.get(name)
            if value is None:
                fed = np.asarray(named[name])
                value = np.zeros(fed.shape, dtype if fed.dtype.kind == "f" else fed.dtype)
            result[i] = value
        return result


def _merge(a: Spec, b: Spec, what: str) -> Spec:
    """The spec covering both ``a`` and ``b``: dims that differ become unknown."""
    if a.ndim != b.ndim:
        raise ShapeError(f"{what} has rank {a.ndim} in one place and {b.ndim} in another; "
                         "flowgrad needs a fixed rank")
    if a.dtype != b.dtype and not (a.dtype.kind == b.dtype.kind == "f"):
        raise ShapeError(f"{what} has dtype {a.dtype} in one place and {b.dtype} in another")
    return Spec(tuple(x if x == y else None for x, y in zip(a.shape, b.shape)), a.dtype)


def _empty_stack(spec: Spec, dtype: np.dtype, axis: int = 0) -> np.ndarray:
    """What stacking zero per-iteration values of ``spec`` gives (unknown dims: 0)."""
    shape = [0 if d is None else d for d in spec.shape]
    shape.insert(axis, 0)
    return np.zeros(shape, dtype if spec.dtype.kind == "f" else spec.dtype)


def _zeros_for(value: Any) -> np.ndarray:
    value = np.asarray(value)
    return np.zeros(value.shape, value.dtype if value.dtype != object else np.float32)


def _add(total, g):
    """Accumulate gradient ``g`` into ``total`` (None: nothing yet).  The first gradient is
    copied once and later ones are added in place, so summing an outer value's gradient over
    many iterations allocates one array, not one per iteration."""
    if g is None:
        return total
    if total is None:
        return np.array(g, copy=True)
    np.add(total, g, out=total, casting="unsafe")
    return total


class _Control(Op):
    """What the three ops share: bodies held as Graphs (plain in config), per-node ports."""

    differentiable = True
    #: the attributes holding a body graph
    body_attrs: tuple[str, ...] = ()

    def check(self) -> None:
        self.bodies: dict[str, Body] = {}
        for name in self.body_attrs:
            value = getattr(self, name)
            from ..graph import Graph
            graph = value if isinstance(value, Graph) else graph_from_plain(value, name)
            setattr(self, name, graph)
            self._attr_values[name] = graph
            self.bodies[name] = Body(graph)
        names, floats = self._ports()
        self.inputs = self.input_names = tuple(names)
        self.optional_inputs = frozenset()
        self.no_grad_inputs = frozenset(n for n, f in zip(names, floats) if not f)

    def _ports(self) -> tuple[list[str], list[bool]]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        out = super().config()
        for name in self.body_attrs:
            out[name] = graph_to_plain(getattr(self, name))
        return out

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.config() == other.config()

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        rest = {k: v for k, v in self._attr_values.items() if k not in self.body_attrs}
        sizes = ", ".join(f"{k}=<{len(getattr(self, k).ops)} ops>" for k in self.body_attrs)
        return f"{type(self).__name__}({sizes}, {rest})"

    @staticmethod
    def _is_float(spec: Spec) -> bool:
        return spec.dtype.kind == "f"


class If(_Control):
    """ONNX If: runs ``then_branch`` when ``cond`` is true, else ``else_branch``.

    Inputs ``cond, outer0, ...``: both branches take every outer value (each reads those it
    needs).  Outputs are the taken branch's; their specs cover both branches (dims that differ
    are unknown).  Backward flows into the taken branch's outer values; ``cond`` takes none.
    """

    type = "if"
    inputs = ("cond", "outer")
    body_attrs = ("then_branch", "else_branch")
    attrs = {"then_branch": Attr("any", doc="the graph run when cond is true"),
             "else_branch": Attr("any", doc="the graph run when cond is false")}

    def check(self) -> None:
        super().check()
        then, other = self.bodies["then_branch"], self.bodies["else_branch"]
        if then.num_inputs != other.num_inputs:
            raise AttrError("if: both branches must take the same outer values "
                            f"({then.num_inputs} and {other.num_inputs})", attr="else_branch")
        if then.num_outputs != other.num_outputs:
            raise AttrError(f"if: the branches give {then.num_outputs} and "
                            f"{other.num_outputs} outputs; they must give as many",
                            attr="else_branch")

    def _ports(self):
        specs = self.bodies["then_branch"].input_specs
        return (["cond"] + [f"outer{i}" for i in range(len(specs))],
                [False] + [self._is_float(s) for s in specs])

    def num_outputs(self, num_inputs):
        return len(self.then_branch.outputs)

    def output_names(self, num_inputs):
        return tuple(f"y{i}" for i in range(self.num_outputs(num_inputs)))

    def infer(self, cond, *outer):
        a = self.bodies["then_branch"].output_specs()
        b = self.bodies["else_branch"].output_specs()
        for i, (x, y) in enumerate(zip(a, b)):
            if x.ndim != y.ndim or (x.dtype != y.dtype and not x.dtype.kind == y.dtype.kind
                                    == "f"):
                raise ShapeError(f"output {i}: the then branch gives {x}, the else branch "
                                 f"{y}; flowgrad needs both of one rank and dtype")
        return tuple(_merge(x, y, f"output {i} of the branches")
                     for i, (x, y) in enumerate(zip(a, b)))

    def forward(self, ctx, cond, *outer):
        taken = "then_branch" if bool(np.asarray(cond).reshape(-1)[0]) else "else_branch"
        body = self.bodies[taken]
        signature = Body.signature(outer)
        outs, record = body.run(list(outer), Body.dtype_of(outer, signature), ctx.grad_enabled,
                                ctx.training, ctx.rng, signature)
        ctx.save(taken, record, outer)
        return tuple(outs)

    def backward(self, ctx, *grads):
        taken, record, outer = ctx.saved
        wrt = list(ctx.needs_input_grad[1:])
        got = self.bodies[taken].backward(record, list(grads), wrt)
        return (None, *got)


class IfPerShape(_Control):
    """An ONNX If whose branches are imported per shape signature, at run time.

    Why: a branch may hold an If whose own branches give different ranks (PyTorch's tracer
    writes ``If(shape[d] == 1, Squeeze, Identity)`` for ``x.squeeze(d)`` with ``d`` unknown),
    chosen by a condition computed only from shapes.  With the input's dims free no Spec
    covers that value, and what reads it (more shape-driven Ifs, an LSTM) depends on its rank.
    With every dim known the condition is a constant and the inner If is inlined; so this op
    keeps its branches as ONNX (``model``: base64 of a model whose graph has inputs ``cond,
    outer...``, the enclosing constants the branches read as initializers, the one If node,
    and its outputs with the types the branches declare) and imports the taken branch for the
    static shapes of the outer values it is fed, once per shape signature, as a body compiled
    like any other (:class:`Body`).  Forward and backward then are ``if``'s: the taken branch
    runs, gradients flow into its outer values, ``cond`` takes none.

    The outputs take the branches' declared types, checked on every run.  Only shapes select
    a specialisation: a condition that depends on values is refused at import.
    """

    type = "if_per_shape"
    inputs = ("cond", "outer")
    #: specialisations kept (least recently used dropped): a model fed many lengths would
    #: otherwise keep one compiled branch per length; a run's saved state keeps its own
    MAX_SHAPES = 16
    attrs = {"model": Attr("str", doc="base64 of the ONNX model holding the If (see above)")}

    def check(self) -> None:
        import base64
        try:
            import onnx
            self._proto = onnx.load_from_string(base64.b64decode(self.model, validate=True))
            graph = self._proto.graph
            if len(graph.node) != 1 or graph.node[0].op_type != "If" or not graph.input:
                raise ValueError("its graph must hold one If node and its inputs")
            self._in_specs = [_declared(vi) for vi in graph.input[1:]]
            self._out_specs = [_declared(vi) for vi in graph.output]
        except Exception as e:          # binascii, protobuf's DecodeError, ValueError
            raise AttrError(f"if_per_shape: attribute 'model' is not a base64 ONNX model of "
                            f"one If: {type(e).__name__}: {e}", attr="model") from None
        self._bodies: dict[tuple, Body] = {}
        super().check()

    def _ports(self):
        return (["cond"] + [f"outer{i}" for i in range(len(self._in_specs))],
                [False] + [self._is_float(s) for s in self._in_specs])

    def num_outputs(self, num_inputs):
        return len(self._out_specs)

    def output_names(self, num_inputs):
        return tuple(f"y{i}" for i in range(len(self._out_specs)))

    def infer(self, cond, *outer):
        # float outputs come in the precision the branch runs in (Body.dtype_of), not the
        # model's declared float32: a float64 plan computes the branch in float64
        floats = [s.dtype for s in outer if s.dtype.kind == "f"]
        wide = np.result_type(*floats) if floats else None
        return tuple(Spec(s.shape, wide) if wide is not None and s.dtype.kind == "f" else s
                     for s in self._out_specs)

    def _body(self, taken: str, outer: list, signature: tuple) -> Body:
        """The taken branch for the shapes of ``outer`` (``signature``: its
        :meth:`Body.signature`), imported on first use.  The key holds the dtypes too: the plan
        runs float32 or float64, and the import folds constants."""
        if None in signature:
            signature = tuple((np.shape(v), np.asarray(v).dtype) for v in outer)
        key = (taken,) + signature
        body = self._bodies.pop(key, None)
        if body is None:
            from ..onnx.builder import ImportProblem
            from ..onnx.subgraph import import_branch_static
            specs = [Spec(np.shape(v), spec.dtype) for v, spec in zip(outer, self._in_specs)]
            try:
                graph = import_branch_static(self._proto, taken, specs)
            except ImportProblem as e:
                shapes = ", ".join(str(list(np.shape(v))) for v in outer)
                raise BodyError(f"its {taken.replace('_', ' ')} for outer values of shapes "
                                f"{shapes}: {e}") from None
            body = Body(graph)
            while len(self._bodies) >= self.MAX_SHAPES:     # the least recently used goes
                self._bodies.pop(next(iter(self._bodies)))
        self._bodies[key] = body
        return body

    def forward(self, ctx, cond, *outer):
        taken = "then_branch" if bool(np.asarray(cond).reshape(-1)[0]) else "else_branch"
        signature = Body.signature(outer)
        body = self._body(taken, list(outer), signature)
        outs, record = body.run(list(outer), Body.dtype_of(outer, signature), ctx.grad_enabled,
                                ctx.training, ctx.rng, signature)
        for i, (out, spec) in enumerate(zip(outs, self._out_specs)):
            shape = np.shape(out)
            if len(shape) != spec.ndim or any(d is not None and d != n
                                              for d, n in zip(spec.shape, shape)):
                raise BodyError(f"output {i} of its {taken.replace('_', ' ')} has shape "
                                f"{list(shape)}, not the declared {spec}")
        ctx.save(body, record)
        return tuple(outs)

    def backward(self, ctx, *grads):
        body, record = ctx.saved
        got = body.backward(record, list(grads), list(ctx.needs_input_grad[1:]))
        return (None, *got)


def _declared(vi) -> Spec:
    """The Spec of an ONNX ValueInfo of ``if_per_shape``'s model (dims unknown where none)."""
    import onnx
    tt = vi.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    return Spec(dims, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)))


class Loop(_Control):
    """ONNX Loop: ``for i in range(M) while cond`` over a body ``(i, cond, v...) -> (cond,
    v..., scan...)``.

    Inputs ``M`` (if ``trip_count``), ``cond`` (if ``condition``), the ``num_carried`` initial
    values ``v0...``, then the outer values.  Outputs: the final carried values, then each scan
    output stacked over the iterations (axis 0).  Without ``condition`` the body's condition
    output is ignored (ONNX's for-loop); a loop needs ``trip_count``, ``condition`` or both
    (with neither, ONNX's loop never ends).
    """

    type = "loop"
    inputs = ("M", "cond", "v", "outer")
    body_attrs = ("body",)
    attrs = {"body": Attr("any", doc="the graph run per iteration"),
             "num_carried": Attr("int", 0, doc="loop-carried values"),
             "trip_count": Attr("bool", True, doc="input M (the trip count) is given"),
             "condition": Attr("bool", True, doc="input cond is given")}

    def check(self) -> None:
        super().check()
        body = self.bodies["body"]
        if not self.trip_count and not self.condition:
            raise AttrError("loop: a loop with neither a trip count M nor a condition never "
                            "ends; give one of them", attr="trip_count")
        if self.num_carried < 0 or body.num_inputs < 2 + self.num_carried:
            raise AttrError(f"loop: the body takes {body.num_inputs} inputs, fewer than 2 + "
                            f"{self.num_carried} carried values", attr="num_carried")
        if body.num_outputs < 1 + self.num_carried:
            raise AttrError(f"loop: the body gives {body.num_outputs} outputs, fewer than 1 "
                            f"(the condition) + {self.num_carried} carried values",
                            attr="num_carried")

    @property
    def _head(self) -> int:
        return int(self.trip_count) + int(self.condition)

    def _ports(self):
        specs = self.bodies["body"].input_specs
        n = self.num_carried
        names = (["M"] if self.trip_count else []) + (["cond"] if self.condition else [])
        floats = [False] * len(names)
        names += [f"v{i}" for i in range(n)] + [f"outer{i}" for i in range(len(specs) - 2 - n)]
        floats += [self._is_float(s) for s in specs[2:]]
        return names, floats

    def num_outputs(self, num_inputs):
        return len(self.body.outputs) - 1

    def output_names(self, num_inputs):
        n = self.num_carried
        return tuple([f"v{i}" for i in range(n)]
                     + [f"scan{i}" for i in range(len(self.body.outputs) - 1 - n)])

    def infer(self, *specs):
        n = self.num_carried
        outs = self.bodies["body"].output_specs()
        initial = specs[self._head:self._head + n]
        final = [_merge(s, o, f"loop-carried value {i}")
                 for i, (s, o) in enumerate(zip(initial, outs[1:1 + n]))]
        scans = [Spec((None,) + o.shape, o.dtype) for o in outs[1 + n:]]
        return tuple(final + scans)

    def forward(self, ctx, *xs):
        body, n, head = self.bodies["body"], self.num_carried, self._head
        limit = int(np.asarray(xs[0]).reshape(-1)[0]) if self.trip_count else None
        cond = bool(np.asarray(xs[head - 1]).reshape(-1)[0]) if self.condition else True
        carried = list(xs[head:head + n])
        outer = list(xs[head + n:])
        dtype = Body.dtype_of(carried + outer)
        records, scans = [], []
        # the body may declare its iteration number and condition as 1-element tensors
        shapes = [tuple(1 for _ in s.shape) for s in body.input_specs[:2]]
        i = 0
        while (limit is None or i < limit) and cond:
            feeds = [np.full(shapes[0], i, np.int64), np.full(shapes[1], cond), *carried,
                     *outer]
            outs, record = body.run(feeds, dtype, ctx.grad_enabled, ctx.training, ctx.rng)
            if self.condition:
                cond = bool(np.asarray(outs[0]).reshape(-1)[0])
            carried = outs[1:1 + n]
            scans.append(outs[1 + n:])
            records.append(record)
            i += 1
        specs = body.output_specs()[1 + n:]
        stacked = []
        for k, spec in enumerate(specs):
            if not scans:
                stacked.append(_empty_stack(spec, dtype))
                continue
            try:
                stacked.append(np.stack([s[k] for s in scans]))
            except ValueError:
                shapes = sorted({np.shape(s[k]) for s in scans})
                raise BodyError(f"scan output {k} changes shape between iterations "
                                f"({', '.join(map(str, shapes))}); ONNX stacks equal shapes")
        ctx.save(records, [np.shape(s) for s in stacked], xs)
        return tuple(carried) + tuple(stacked)

    def backward(self, ctx, *grads):
        records, scan_shapes, xs = ctx.saved
        body, n, head = self.bodies["body"], self.num_carried, self._head
        needs = ctx.needs_input_grad
        num_outer = len(xs) - head - n
        carried_g = list(grads[:n])
        scan_g = list(grads[n:])
        # every carried float needs a gradient inside the loop: it may depend on an outer value
        wrt = [False, False] + [True] * n + list(needs[head + n:])
        outer_g: list = [None] * num_outer
        for i in range(len(records) - 1, -1, -1):
            seeds = [None] + carried_g + [None if g is None else g[i] for g in scan_g]
            got = body.backward(records[i], seeds, wrt)
            carried_g = got[2:2 + n]
            for k in range(num_outer):
                outer_g[k] = _add(outer_g[k], got[2 + n + k])
        out: list = [None] * len(xs)
        for i, x in enumerate(xs):
            if not needs[i]:
                continue
            g = (carried_g[i - head] if head <= i < head + n
                 else outer_g[i - head - n] if i >= head + n else None)
            out[i] = g if g is not None else _zeros_for(x)
        return tuple(out)


class Scan(_Control):
    """ONNX Scan (opset 9 on): a body ``(state..., scan_in..., outer...) -> (state...,
    scan_out...)`` run once per slice of the scan inputs.

    Inputs: the initial states, the ``num_scan_inputs`` scan inputs, then the outer values.
    ``scan_input_axes`` / ``scan_input_directions`` (1 = from the end) say how each scan input
    is sliced, ``scan_output_axes`` / ``scan_output_directions`` how each scan output is
    stacked (direction 1: the first iteration's value comes last).  With ``batch_axis`` (ONNX's
    Scan-8) every input has a leading batch axis and each batch row is scanned on its own.
    """

    type = "scan"
    inputs = ("state", "scan", "outer")
    body_attrs = ("body",)
    attrs = {"body": Attr("any", doc="the graph run per slice"),
             "num_scan_inputs": Attr("int", doc="how many inputs are scanned"),
             "num_outer": Attr("int", 0, doc="outer-scope values the body reads"),
             "scan_input_axes": Attr("ints", (), doc="axis of each scan input (default 0)"),
             "scan_input_directions": Attr("ints", (), doc="0 forward, 1 reverse"),
             "scan_output_axes": Attr("ints", (), doc="axis of each scan output (default 0)"),
             "scan_output_directions": Attr("ints", (), doc="0 forward, 1 reverse"),
             "batch_axis": Attr("bool", False, doc="Scan-8: axis 0 of every input is a batch")}

    def check(self) -> None:
        super().check()
        body, m = self.bodies["body"], self.num_scan_inputs
        n = body.num_inputs - m - self.num_outer
        if m < 1 or self.num_outer < 0 or n < 0:
            raise AttrError(f"scan: the body takes {body.num_inputs} inputs, fewer than "
                            f"{m} scan inputs + {self.num_outer} outer values (and at least "
                            "one scan input is needed)", attr="num_scan_inputs")
        if body.num_outputs < n:
            raise AttrError(f"scan: the body gives {body.num_outputs} outputs, fewer than its "
                            f"{n} states", attr="body")
        k = body.num_outputs - n
        for name, count in (("scan_input_axes", m), ("scan_input_directions", m),
                            ("scan_output_axes", k), ("scan_output_directions", k)):
            value = getattr(self, name)
            if value and len(value) != count:
                raise AttrError(f"scan: {name} has {len(value)} entries; give one per scan "
                                f"{'input' if 'input' in name else 'output'} ({count})",
                                attr=name)
        for name in ("scan_input_directions", "scan_output_directions"):
            if any(d not in (0, 1) for d in getattr(self, name)):
                raise AttrError(f"scan: {name} must hold 0 (forward) or 1 (reverse), got "
                                f"{list(getattr(self, name))}", attr=name)
        if self.batch_axis and (self.scan_input_axes or self.scan_output_axes
                                or self.scan_output_directions):
            raise AttrError("scan: batch_axis (Scan-8) has no scan axes or output directions",
                            attr="batch_axis")

    @property
    def num_state(self) -> int:
        return self.bodies["body"].num_inputs - self.num_scan_inputs - self.num_outer

    def _ports(self):
        specs = self.bodies["body"].input_specs
        m = self.num_scan_inputs
        n = len(specs) - m - self.num_outer
        names = ([f"state{i}" for i in range(n)] + [f"scan{i}" for i in range(m)]
                 + [f"outer{i}" for i in range(self.num_outer)])
        return names, [self._is_float(s) for s in specs]

    def num_outputs(self, num_inputs):
        return len(self.body.outputs)

    def output_names(self, num_inputs):
        n = self.num_state
        return tuple([f"state{i}" for i in range(n)]
                     + [f"scan{i}" for i in range(len(self.body.outputs) - n)])

    def _in_axis(self, j: int, ndim: int) -> int:
        axis = self.scan_input_axes[j] if self.scan_input_axes else 0
        return normalize_axis(axis, ndim)

    def _out_axis(self, k: int, ndim: int) -> int:
        axis = self.scan_output_axes[k] if self.scan_output_axes else 0
        return normalize_axis(axis, ndim + 1)

    def _reverse_in(self, j: int) -> bool:
        return bool(self.scan_input_directions and self.scan_input_directions[j])

    def _reverse_out(self, k: int) -> bool:
        return bool(self.scan_output_directions and self.scan_output_directions[k])

    def infer(self, *specs):
        n, m = self.num_state, self.num_scan_inputs
        outs = self.bodies["body"].output_specs()
        lead = 1 if self.batch_axis else 0
        lengths = set()
        for j, spec in enumerate(specs[n:n + m]):
            if spec.ndim < 1 + lead:
                raise ShapeError(f"scan input {j} is a scalar; it needs an axis to scan")
            axis = lead if self.batch_axis else self._in_axis(j, spec.ndim)
            lengths.add(spec.shape[axis])
        known = {d for d in lengths if d is not None}
        if len(known) > 1:
            raise ShapeError(f"the scan inputs have different lengths {sorted(known)}")
        length = known.pop() if len(known) == 1 and None not in lengths else None
        states = []
        for i, (s, o) in enumerate(zip(specs[:n], outs[:n])):
            if self.batch_axis:
                o = Spec((s.shape[0],) + o.shape, o.dtype)
            states.append(_merge(s, o, f"scan state {i}"))
        scans = []
        for k, o in enumerate(outs[n:]):
            if self.batch_axis:
                batch = specs[0].shape[0] if specs else None
                scans.append(Spec((batch, length) + o.shape, o.dtype))
                continue
            shape = list(o.shape)
            shape.insert(self._out_axis(k, o.ndim), length)
            scans.append(Spec(tuple(shape), o.dtype))
        return tuple(states + scans)

    def forward(self, ctx, *xs):
        n, m = self.num_state, self.num_scan_inputs
        if not self.batch_axis:
            outs, saved = self._scan(ctx, list(xs[:n]), list(xs[n:n + m]), list(xs[n + m:]))
            ctx.save(saved, xs)
            return tuple(outs)
        rows = [np.shape(x)[0] for x in xs[:n + m]]
        if len(set(rows)) > 1:
            raise BodyError(f"Scan-8 inputs have batch sizes {rows}; they must agree")
        per_row, saved = [], []
        for b in range(rows[0] if rows else 0):
            outs, row_saved = self._scan(ctx, [x[b] for x in xs[:n]],
                                         [x[b] for x in xs[n:n + m]], list(xs[n + m:]))
            per_row.append(outs)
            saved.append(row_saved)
        ctx.save(saved, xs)
        if not per_row:
            specs = self.bodies["body"].output_specs()
            dtype = Body.dtype_of(xs)
            return tuple(np.zeros((0,) + tuple(d or 0 for d in s.shape)
                                  + (() if i < n else (0,)), dtype) for i, s in enumerate(specs))
        return tuple(np.stack([r[k] for r in per_row]) for k in range(len(per_row[0])))

    def _scan(self, ctx, states, scans, outer):
        """One scan (no batch axis): the outputs, and what backward needs."""
        body, n = self.bodies["body"], self.num_state
        axes = [0 if self.batch_axis else self._in_axis(j, np.ndim(x))   # (a batch row: time
                for j, x in enumerate(scans)]                             # is its axis 0)
        lengths = {np.shape(x)[a] for x, a in zip(scans, axes)}
        if len(lengths) != 1:
            raise BodyError(f"the scan inputs have different lengths {sorted(lengths)} along "
                            "their scan axes")
        length = lengths.pop()
        dtype = Body.dtype_of(states + scans + outer)
        records, collected = [], []
        for t in range(length):
            slices = [np.take(x, length - 1 - t if self._reverse_in(j) else t, axis=a)
                      for j, (x, a) in enumerate(zip(scans, axes))]
            outs, record = body.run(states + slices + outer, dtype, ctx.grad_enabled,
                                    ctx.training, ctx.rng)
            states = outs[:n]
            collected.append(outs[n:])
            records.append(record)
        specs = body.output_specs()[n:]
        stacked = []
        for k, spec in enumerate(specs):
            axis = 0 if self.batch_axis else self._out_axis(k, spec.ndim)
            if not collected:
                stacked.append(_empty_stack(spec, dtype, axis))
                continue
            items = [c[k] for c in collected]
            if self._reverse_out(k):
                items = items[::-1]
            try:
                stacked.append(np.stack(items, axis=axis))
            except ValueError:
                shapes = sorted({np.shape(v) for v in items})
                raise BodyError(f"scan output {k} changes shape between iterations "
                                f"({', '.join(map(str, shapes))}); ONNX stacks equal shapes")
        return list(states) + stacked, (records, axes, length, [s.shape for s in stacked])

    def backward(self, ctx, *grads):
        saved, xs = ctx.saved
        n, m = self.num_state, self.num_scan_inputs
        needs = ctx.needs_input_grad
        if not self.batch_axis:
            got = self._scan_back(saved, list(grads), xs, needs)
        else:
            rows = []
            for b, row in enumerate(saved):
                row_grads = [None if g is None else g[b] for g in grads]
                rows.append(self._scan_back(row, row_grads, [x[b] if i < n + m else x
                                                             for i, x in enumerate(xs)], needs))
            got = []
            for i, x in enumerate(xs):
                if not needs[i]:
                    got.append(None)
                elif i < n + m:
                    got.append(np.stack([r[i] for r in rows]) if rows else _zeros_for(x))
                else:
                    total = None
                    for r in rows:
                        total = _add(total, r[i])
                    got.append(total if total is not None else _zeros_for(x))
        return tuple(got)

    def _scan_back(self, saved, grads, xs, needs):
        records, axes, length, out_shapes = saved
        body, n, m = self.bodies["body"], self.num_state, self.num_scan_inputs
        num_outer = len(xs) - n - m
        state_g = list(grads[:n])
        out_g = list(grads[n:])
        wrt = [True] * n + [bool(needs[n + j]) for j in range(m)] + list(needs[n + m:])
        scan_g: list[list] = [[None] * length for _ in range(m)]
        outer_g: list = [None] * num_outer
        for t in range(length - 1, -1, -1):
            seeds = list(state_g)
            for k, g in enumerate(out_g):
                if g is None:
                    seeds.append(None)
                    continue
                axis = 0 if self.batch_axis else self._out_axis(k, len(out_shapes[k]) - 1)
                pos = length - 1 - t if self._reverse_out(k) else t
                seeds.append(np.take(g, pos, axis=axis))
            got = body.backward(records[t], seeds, wrt)
            state_g = got[:n]
            for j in range(m):
                scan_g[j][length - 1 - t if self._reverse_in(j) else t] = got[n + j]
            for k in range(num_outer):
                outer_g[k] = _add(outer_g[k], got[n + m + k])
        out: list = [None] * len(xs)
        for i, x in enumerate(xs):
            if not needs[i]:
                continue
            if i < n:
                g = state_g[i]
            elif i < n + m:
                j = i - n
                g = (np.stack(scan_g[j], axis=axes[j]) if length and scan_g[j][0] is not None
                     else None)
            else:
                g = outer_g[i - n - m]
            out[i] = g if g is not None else _zeros_for(x)
        return out
