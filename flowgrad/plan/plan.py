"""The :class:`Plan`: a compiled graph that runs forward and backward, batch after batch.

The plan only ties the parts together — it compiles a program per request and caches it
(:mod:`.programs`), runs it (:mod:`.run`) over its parameter store (:mod:`.params`) with
buffers recycled from its pool (:mod:`.memory`) — and keeps what a backward needs from the
forward before it.  Splitting a batch into micro-batches is the trainer's business
(:func:`flowgrad.train.forward_backward`); a plan does one forward and one backward.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..backend import CPUBackend
from ..errors import FlowgradError
from ..graph import Graph
from ..op import Context
from ..parallel import blas_single
from ..passes import prepare
from . import memo
from .memory import BufferPool
from .params import ParamStore
from .programs import (BackwardProgram, ForwardProgram, Layout, compile_backward,
                       compile_forward)
from .run import feed, run_backward, run_forward, seed_value


class Plan:
    """A compiled graph: call :meth:`forward` then :meth:`backward`, for any batch size.

    ``graph`` must be prepared (:func:`compile` prepares one that is not).  ``params`` maps
    each param name to its live array (updated in place by optimizers and by stateful ops);
    ``dtype`` is the floating type every float leaf and feed is cast to.
    """

    def __init__(self, graph: Graph, dtype: Any = np.float32, seed: int = 0):
        if not graph.prepared:
            raise FlowgradError(f"graph '{graph.name}' is not prepared: load it with "
                                "flowgrad.load, or compile it with flowgrad.compile, which "
                                "prepares it")
        self.graph = graph
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise FlowgradError(f"a plan's dtype must be a float type, got {self.dtype}")
        self.training = False
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.layout = Layout(graph)
        self._store = ParamStore(graph, self.dtype, self.layout.order)
        self.params: dict[str, np.ndarray] = self._store.params
        # every run's value list starts as a copy of this one: the leaves' live arrays in
        # their slots (params change in place, never by replacement)
        self._leaf_vals: list[Any] = [None] * self.layout.num_slots
        for name, value in self._store.leaves():
            self._leaf_vals[self.layout.slot[(name, 0)]] = value
        self._forward_programs: dict[tuple, ForwardProgram] = {}
        self._backward_programs: dict[tuple, BackwardProgram] = {}
        self._last: tuple[ForwardProgram, list, dict[int, np.ndarray]] | None = None
        self._pool = BufferPool()
        self.backend = CPUBackend(self._pool, self._store.constants())

    @property
    def order(self) -> list[str]:
        """Every node, in the deterministic topological order the plan runs them."""
        return self.layout.order

    # -- modes and parameters -------------------------------------------------------------
    def train(self, mode: bool = True) -> "Plan":
        """Switch ops that differ between training and evaluation (dropout, batch norm)."""
        if mode:
            self._store.refuse_if_frozen("cannot train")
        self.training = mode
        return self

    def freeze(self) -> "Plan":
        """Fix the params for the plan's life, for inference: returns the plan, in eval mode.

        Why: a plan's params are live — an optimizer, ``load_state_dict`` or the user may write
        them in place between two calls — so whatever an op derives from them (a batch norm
        folded into the convolution before it, a quantized weight shifted by its zero point)
        is derived again at every call.  Once frozen they are read-only arrays and the plan's
        backend keeps those derivations (:meth:`CPUBackend.prepared`), as an onnxruntime
        session does: on PP-OCR's mobile classifier at batch 1, about a seventh of the run.
        Every conv → batch norm pair is then folded (a live plan folds only where scaling the
        weights costs less than a pass over the output), so the outputs agree with the live
        plan's to float rounding, and from run to run bit for bit.  A frozen plan still
        computes gradients, of its inputs (``backward(..., wrt=...)``: input optimization); no
        param is trainable any more, and training it or loading params into it is an error.
        Evaluated without gradient, what depends only on the inputs' shapes and the params (an
        ONNX model's anchor grid, built from Shape → Range → Expand…) is computed once per input
        shape (:mod:`.memo`), bit for bit as it would be at every call.
        """
        self.eval()
        self._store.freeze()
        self.backend.declare_constants(self.params.values())
        # compiled again on next use: the backward ones computed the params' gradients, and
        # the forward ones' fused regions look at which operands are constants once
        self._forward_programs.clear()
        self._backward_programs.clear()
        return self

    @property
    def frozen(self) -> bool:
        """Whether :meth:`freeze` fixed the params."""
        return self._store.frozen

    def eval(self) -> "Plan":
        return self.train(False)

    @property
    def trainable(self) -> list[str]:
        """Names of the params that receive gradients."""
        return self._store.trainable

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every param (trainable and state)."""
        return self._store.state_dict()

    def load_state_dict(self, values: Mapping[str, np.ndarray]) -> None:
        """Copy ``values`` into the live params (shapes must match; unknown names are errors)."""
        self._store.load_state_dict(values)

    def export_graph(self) -> Graph:
        """The graph with the plan's current param values, e.g. after training."""
        return self._store.export_graph()

    # -- running --------------------------------------------------------------------------
    def forward(self, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None,
                grad: bool = True) -> dict[str, np.ndarray]:
        """Run the graph on a batch.

        ``feeds`` maps each input needed to an array whose leading axis is the batch;
        ``outputs`` (default: the graph's declared outputs) names the values to return, as
        ``node`` or ``node.port``.  With ``grad=False`` nothing is kept for backward.
        """
        outputs = tuple(self.graph.outputs if outputs is None else outputs)
        fuse = not grad and not self.training
        if self._last is not None:      # the last forward's backward never came: its run ends
            self._last = None
            self._pool.end_run()
        program = self._forward_programs.get((outputs, fuse))
        if program is None:
            program = self._forward_programs[(outputs, fuse)] = \
                compile_forward(self.layout, outputs, fuse)
            if fuse and self.frozen:        # what depends only on shapes: once per shape
                memo.attach(self.layout, program)
        vals = self._leaf_vals.copy()
        feed(self.layout, self.dtype, vals, self._by_node(feeds), program)
        ctxs: list[Context | None] = [None] * len(self.layout.steps) if grad else []
        with blas_single():     # every thread a run uses is flowgrad's (flowgrad.parallel)
            run_forward(program, vals, ctxs, grad, self.training, self.rng, self.backend,
                        self._pool, self._store)
        result = {ref: _writable(vals[slot]) for ref, slot in program.output_slots.items()}
        if grad:
            # keep the outputs (seeds need their shapes) and the feeds (a gradient asked for an
            # input that no path reaches is zeros of the input's shape)
            kept = {s: vals[s] for s in (*program.output_slots.values(),
                                         *self.layout.input_slots.values())}
            self._last = (program, ctxs, kept)
        return result

    def backward(self, seeds: Mapping[str, Any], wrt: Iterable[str] = ()) -> dict[str, np.ndarray]:
        """Backpropagate from ``seeds`` through the last forward.

        ``seeds`` maps outputs to their gradients: ``{"loss": 1.0}`` for a scalar loss (the
        lecture notes' "the input to backward is the number 1"), or an array of the output's
        shape; a number seeds every element.  Returns gradients for every trainable param that
        the seeds reach and for each leaf named in ``wrt`` (zeros where no path exists).
        """
        if self._last is None:
            raise FlowgradError("backward() needs a forward(..., grad=True) first")
        forward_program, ctxs, out_vals = self._last
        asked = tuple(wrt)
        wrt = tuple(self._node_of(name) for name in asked)
        key = (id(forward_program), tuple(seeds), wrt)
        program = self._backward_programs.get(key)
        if program is None:
            program = self._backward_programs[key] = compile_backward(
                self.layout, forward_program, tuple(seeds), wrt, self.trainable)
        g: list[Any] = [None] * self.layout.num_slots
        for ref, slot in program.seed_slots.items():
            g[slot] = seed_value(ref, seeds[ref], out_vals[slot])
        with blas_single():
            run_backward(self.graph, program, ctxs, g, self._pool)
        self._last = None
        grads = {}
        for name, slot in program.leaf_slots.items():
            value = g[slot]
            if value is None:
                if name not in wrt:
                    continue
                value = np.zeros_like(self.params[name] if name in self.params
                                      else out_vals[slot])
            grads[name] = value
        for name, node in zip(asked, wrt):      # a leaf asked for by an alias: by that name
            if name != node and node in grads:
                grads[name] = grads[node] if node in self.trainable or node in asked \
                    else grads.pop(node)
        return grads

    # -- names ------------------------------------------------------------------------------
    def _node_of(self, name: str) -> str:
        """The leaf node ``name`` is or aliases (:meth:`Graph.leaf`); ``name`` itself when it
        is neither, for the caller's own message."""
        if name in self.graph.dag:
            return name
        try:
            return self.graph.leaf(name)
        except KeyError:
            return name

    def _by_node(self, feeds: Mapping[str, Any]) -> Mapping[str, Any]:
        """``feeds`` keyed by input node: a model's own names (graph aliases) are accepted."""
        if all(k in self.layout.input_slots for k in feeds):
            return feeds
        return {self._node_of(k): v for k, v in feeds.items()}

    def forward_backward(self, feeds: Mapping[str, Any], seeds: Mapping[str, Any],
                         wrt: Iterable[str] = (), outputs: Sequence[str] | None = None
                         ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """:meth:`forward` of ``outputs`` and the seeded ones, then :meth:`backward`; returns
        ``(outputs, grads)``."""
        outputs = tuple(dict.fromkeys(tuple(self.graph.outputs if outputs is None else outputs)
                                      + tuple(seeds)))
        out = self.forward(feeds, outputs)
        return out, self.backward(seeds, wrt)


def _writable(value: Any) -> Any:
    """An output as the caller gets it, an array of its own to write into: a read-only one — a
    frozen plan's param, or what it derives from one once and keeps (a transposed weight), or
    an ``expand``'s broadcast view — is copied.  Why: a frozen plan's memoised calls
    (:mod:`.memo`) hand copies already, so without this its first call alone would hand
    arrays that refuse to be written."""
    if type(value) is np.ndarray and not value.flags.writeable:
        return value.copy()
    return value


def compile(graph: Graph, dtype: Any = np.float32, seed: int = 0) -> Plan:  # noqa: A001
    """Compile a graph, preparing it first (:func:`flowgrad.prepare`) if it is not yet."""
    return Plan(prepare(graph), dtype=dtype, seed=seed)
