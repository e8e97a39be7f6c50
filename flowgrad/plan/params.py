"""The parameter store: a plan's own copies of its graph's leaves, cast to the plan's dtype.

Why a copy: optimizers and stateful ops (batch norm's running statistics) update params in
place, batch after batch, and a graph may be compiled twice (a float64 twin for a gradient
check) or exported while it trains — so the graph keeps the values it was built with and each
plan holds live arrays of its own.  Constants are only read: they are cast, never copied.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np

from ..errors import FlowgradError, OpError, did_you_mean
from ..graph import Graph


class ParamStore:
    """``params`` maps each param name to its live array, in the plan's ``order`` (optimizers,
    checkpoints and gradient norms follow it); ``dtype`` is the floating type every float leaf
    is cast to."""

    def __init__(self, graph: Graph, dtype: np.dtype, order: list[str]):
        self.graph = graph
        self.dtype = dtype
        self.params: dict[str, np.ndarray] = {}
        self._consts: dict[str, np.ndarray] = {}
        #: set by :meth:`freeze`: the params are read-only for the plan's life
        self.frozen = False
        for name in order:
            if graph.is_param(name):
                self.params[name] = np.array(self.cast(graph.value_of(name)), copy=True)
            elif graph.is_const(name):
                self._consts[name] = self.cast(graph.value_of(name))

    def cast(self, value: Any) -> np.ndarray:
        """``value`` as an array, in the plan's dtype if it is a float (a view when it is)."""
        value = np.asarray(value)
        return value.astype(self.dtype, copy=False) if value.dtype.kind == "f" else value

    def leaves(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every param and constant with the array a run reads for it."""
        yield from self.params.items()
        yield from self._consts.items()

    def constants(self) -> Iterator[np.ndarray]:
        """The arrays runs read for the graph's constants: fixed for the plan's life (no
        optimizer, checkpoint or ``load_state_dict`` writes them)."""
        yield from self._consts.values()

    def freeze(self) -> None:
        """Make every param read-only: from now on nothing writes them (:meth:`Plan.freeze`)."""
        for value in self.params.values():
            value.flags.writeable = False
        self.frozen = True

    def refuse_if_frozen(self, what: str) -> None:
        """Raise, saying ``what`` cannot be done, when the params are frozen."""
        if self.frozen:
            raise FlowgradError(f"{what}: the plan of '{self.graph.name}' is frozen for "
                                "inference (Plan.freeze); compile the graph again for a plan "
                                "whose params can change")

    @property
    def trainable(self) -> list[str]:
        """Names of the params that receive gradients (none once frozen)."""
        if self.frozen:
            return []
        return [n for n in self.params if self.graph.is_trainable(n)]

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every param (trainable and state)."""
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, values: Mapping[str, np.ndarray]) -> None:
        """Copy ``values`` into the live params (shapes must match; unknown names are errors)."""
        self.refuse_if_frozen("cannot load params")
        for name, value in values.items():
            if name not in self.params and name in self.graph.aliases:
                try:                            # a model's own name for a renamed param
                    name = self.graph.leaf(name)
                except KeyError:
                    pass
            if name not in self.params:
                raise FlowgradError(f"unknown param '{name}'{did_you_mean(name, self.params)}")
            value = np.asarray(value)
            if value.shape != self.params[name].shape:
                raise FlowgradError(f"param '{name}' has shape {self.params[name].shape}, "
                                    f"the value given has {value.shape}")
            self.params[name][...] = value

    def export_graph(self) -> Graph:
        """The graph with the current param values, e.g. after training."""
        out = self.graph.copy()
        for name, value in self.params.items():
            out.set_value(name, value.copy())
        return out

    def apply_state(self, step: Any, state: Mapping[int, np.ndarray]) -> None:
        """Write what a stateful op's forward computed (``ctx.update_state``) into the state
        leaves feeding it: non-trainable params, never weights an optimizer owns."""
        if state:
            self.refuse_if_frozen(f"'{step.name}' ({step.op.type}) updates its state")
        for port, value in state.items():
            leaf = step.state_leaves.get(port)
            if leaf is None or self.graph.is_trainable(leaf):
                raise OpError(f"'{step.name}' ({step.op.type}) updates its input {port}, which is "
                              "not fed by a non-trainable param", node=step.name)
            self.params[leaf][...] = value
