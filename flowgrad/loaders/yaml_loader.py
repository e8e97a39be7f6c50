"""The YAML front end.

    flowgrad: 1                          # schema version
    name: digits_mlp
    seed: 0                              # default seed of every param initializer
    inputs:  {x: {shape: [64]}, label: {shape: [], dtype: int64}}   # shapes exclude the batch
    params:
      W1: {shape: [64, 32], init: {kind: glorot_uniform}}
      b1: {shape: [32], init: {kind: zeros}, lr_mult: 2.0}
    constants: {lam: {value: 0.01}}
    nodes:
      fc1:  {op: dense, in: {x: x, W: W1, b: b1}}     # a mapping to named ports
      h1:   {op: relu, in: fc1}                        # one input
      cat:  {op: concat, in: [h1, fc1], axis: 1}       # a list: positional / variadic; attrs inline
    outputs: [cat]
    weights: digits.npz                  # optional: values of params/constants given no init/value
    train: {...}                         # the training recipe (:mod:`.train_section`)
    visualize: {...}                     # input-optimization defaults (:mod:`.visualize_section`)

A file may also define ``blocks:`` (parameterized sub-graphs), ``include:`` other files' blocks
and instantiate them in ``nodes`` (``{block: NAME, in: ..., with: {...}, repeat: N}``); they are
expanded before anything here sees the file (:mod:`.blocks`), into entries named by instance
(``stage2.block1.conv``) whose locations also carry their instantiation sites.

One namespace: every name is declared once, and the section says its kind.  ``node.port``
picks an output of a multi-output op.  Every mistake is reported with ``path:line:col``, the
source line and a caret, and all mistakes of a file are reported together, in one round: the
YAML's, the wiring's, the shapes' (of every part of the graph that is wired correctly) and
those of the ``train:`` and ``visualize:`` sections, which are read here into typed configs
(``graph.meta["train"]``, ``graph.meta["visualize"]``).
"""
from __future__ import annotations

import contextlib
import gc
import os
from typing import Any, Iterator, Mapping

import networkx as nx
import numpy as np

from ..errors import AttrError, DiagnosticList, FlowgradError, GraphError, PluginError, \
    SourceLocation, did_you_mean, unknown_key
from ..graph import Graph
from ..initializers import INITIALIZERS, initialize, param_seed
from ..op import Spec
from ..passes import prepare
from ..plugins import Registry, default_registry, unknown_op_message
from .block_sites import InstanceLocation, source_order, with_sites
from .blocks import Expansion, expand, uses_blocks
from .train_section import complete_from_graph, read_train_section
from .visualize_section import read_visualize_section
from .value_checks import MAX_DIM, MAX_PARAM_BYTES, MAX_RANK, MAX_SAMPLE_BYTES, finite_array, \
    is_finite, is_shape, nbytes, size_text
from .yaml_source import MarkedDict, MarkedList, plain, read_yaml

SCHEMA_VERSION = 1
TOP_KEYS = ("flowgrad", "name", "doc", "seed", "weights", "include", "blocks", "inputs",
            "params", "constants", "nodes", "aliases", "outputs", "train", "visualize")
INPUT_KEYS = ("shape", "dtype", "batch", "doc")
PARAM_KEYS = ("shape", "init", "trainable", "lr_mult", "decay_mult", "doc")
CONST_KEYS = ("value", "dtype", "doc")
NODE_KEYS = ("op", "in", "doc")
#: initializer settings that scale the weights: a negative one is a sign mistake
_SCALES = ("std", "gain")
DTYPES = {"float": "float32", "float32": "float32", "float64": "float32", "int64": "int64",
          "int32": "int32", "bool": "bool"}


def load_yaml(path: str, registry: Registry | None = None, text: str | None = None) -> Graph:
    """Load, validate and prepare the graph in the YAML file at ``path``."""
    registry = registry or default_registry()
    with gc_paused():
        data, _ = read_yaml(path, text)
        return _Builder(path, registry).load(data)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Hold Python's cycle collector while a graph is read and prepared.

    Loading allocates a few objects per YAML value and keeps nearly all of them, which makes
    the collector walk the growing heap again and again: on a 10,000-node graph that tripled
    the time to read the file.  Loading leaves no reference cycles of its own behind, so
    nothing is lost by collecting once afterwards, as the collector then will.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _Builder:
    def __init__(self, path: str, registry: Registry):
        self.path = path
        self.registry = registry
        self.errors = DiagnosticList()
        self.graph: Graph | None = None
        self.declared: dict[str, SourceLocation] = {}
        self.weights: dict[str, np.ndarray] | None = None
        self.broken: set[str] = set()      # nodes with an input that failed to wire
        self.expansion: Expansion | None = None    # the file's blocks, if it uses any
        self.allocate = True               # False: the params would not fit in memory

    # -- small checks -------------------------------------------------------------------
    def error(self, message: str, loc: SourceLocation | None) -> None:
        self.errors.add(message, loc)

    def mapping(self, value: Any, what: str, locs: Mapping[Any, SourceLocation],
                key: Any) -> MarkedDict | None:
        """``value`` if it is a mapping; else an error at ``locs[key]`` (looked up only then:
        most locations are never needed, and a large file has tens of thousands)."""
        if isinstance(value, MarkedDict):
            return value
        self.error(f"{what} must be a mapping, got {_describe(value)}", locs[key])
        return None

    def keys(self, d: MarkedDict, allowed: tuple[str, ...], what: str,
             required: tuple[str, ...] = ()) -> None:
        for key in d:
            if key not in allowed:
                self.error(unknown_key(key, what, allowed), d.key_locs[key])
        for key in required:
            if key not in d:
                self.error(f"{what} needs '{key}'", d.loc)

    def typed(self, d: MarkedDict, key: str, kinds: tuple[type, ...], what: str,
              default: Any = None) -> Any:
        if key not in d:
            return default
        value = d[key]
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            self.error(f"'{key}' of {what} must be {_kinds(kinds)}, got {_describe(value)}",
                       d.value_locs[key])
            return default
        return value

    def number(self, d: MarkedDict, key: str, what: str, default: Any = None,
               low: float | None = None) -> Any:
        """A finite number (``>= low`` if given) at ``key``; ``default`` after an error."""
        value = self.typed(d, key, (int, float), what)
        if value is None:
            return default
        if not is_finite(value) or low is not None and value < low:
            bound = "" if low is None else f" >= {low}"
            self.error(f"'{key}' of {what} must be a finite number{bound}, got {value!r}",
                       d.value_locs[key])
            return default
        return value

    def shape(self, d: MarkedDict, what: str, free: bool = False) -> tuple[int, ...] | None:
        """The list at ``shape``; with ``free`` (inputs), ``null`` entries are free dims whose
        size each batch sets (a text line's width, an image's height and width)."""
        value = d.get("shape")
        if value is None:
            return None
        if not is_shape([1 if free and v is None else v for v in value]
                        if isinstance(value, list) else value):
            shown = "[" + ", ".join("null" if v is None else repr(v) for v in plain(value)) + "]" \
                if isinstance(value, list) and len(value) <= 8 and not any(
                    isinstance(v, (list, dict)) for v in value) else None     # (as YAML writes it)
            sizes = "positive integers or null (a free dim)" if free else "positive integers"
            self.error(f"'shape' of {what} must be a list of {sizes} (at most "
                       f"{MAX_RANK} sizes, each at most {MAX_DIM}), got "
                       f"{_describe(value) if shown is None else shown}", d.value_locs["shape"])
            return None
        return tuple(value)

    def fits(self, params: MarkedDict) -> bool:
        """Whether the params that initializers make fit in :data:`MAX_PARAM_BYTES`, asked
        before any is made; else an error naming the biggest, at its shape."""
        sizes = {}
        for name, d in params.items():
            if type(d) is MarkedDict:
                shape, init = d.get("shape"), d.get("init")
                if type(init) is MarkedDict and init.get("kind") != "value" and is_shape(shape):
                    sizes[name] = nbytes(shape)
        total = sum(sizes.values())
        if total <= MAX_PARAM_BYTES:
            return True
        name = max(sizes, key=sizes.__getitem__)
        size, d = sizes[name], params[name]
        self.error(f"the params would take {size_text(total)}, more than the "
                   f"{size_text(MAX_PARAM_BYTES)} a graph may hold; the biggest is '{name}' "
                   f"(shape {d['shape']}, {size_text(size)} as initialized in float64)",
                   d.value_locs["shape"])
        return False

    def declare(self, name: Any, loc: SourceLocation) -> bool:
        if not isinstance(name, str) or not name:
            self.error(f"names must be non-empty strings, got {name!r}", loc)
            return False
        # names made by expanding a block are namespaced by its instance: 'stage1.block2.c1'
        bad = [c for c in ("#" if isinstance(loc, InstanceLocation) else "#.") if c in name]
        if bad or name.strip() != name:
            self.error(f"name '{name}' may not contain '#', '.' or surrounding spaces "
                       "('.' selects an output port, '#' marks flowgrad's own nodes)", loc)
            return False
        if name in self.declared:
            first = self.declared[name]
            self.error(f"'{name}' is already declared at line {first.line}; every input, "
                       "param, constant and node shares one namespace", loc)
            return False
        self.declared[name] = loc
        return True

    # -- the whole file -----------------------------------------------------------------
    def load(self, data: Any) -> Graph:
        """Build the graph, run the passes, read the settings sections; raise every mistake
        of the file at once, in source order."""
        if uses_blocks(data):
            self.expansion = expand(data, self.path, self.errors)
            data = self.expansion.data
        graph = self.run_passes(self.build(data))
        sound = graph is not None and not self.errors
        configs = {}
        for key, read in (("train", read_train_section), ("visualize", read_visualize_section)):
            if key in data:
                loc = data.value_locs[key]
                configs[key] = read(data[key], self.graph, self.registry, self.errors,
                                    self.failed, loc)
                if key == "train" and sound:     # what the section leaves to the graph
                    complete_from_graph(configs[key], graph, self.errors, loc)
        if self.errors:
            raise GraphError(sorted(map(with_sites, self.errors.items),
                                    key=lambda d: source_order(d, self.path)))
        graph.meta.update(configs)
        return graph

    def run_passes(self, graph: Graph) -> Graph | None:
        """The prepared graph, or None after adding the passes' errors.  With wiring errors,
        the passes still check the part of the graph upstream of every broken node, so a
        shape error there is reported with them."""
        if self.broken:
            graph = graph.copy()
            dropped = set(self.broken)
            for name in self.broken:
                dropped.update(nx.descendants(graph.dag, name))
            graph.dag.remove_nodes_from(dropped)
            graph.outputs = [ref for ref in graph.outputs if self.resolves(graph, ref)]
        try:
            return prepare(graph)
        except GraphError as e:
            self.errors.items.extend(e.diagnostics)
            return None

    @staticmethod
    def resolves(graph: Graph, ref: str) -> bool:
        try:
            graph.resolve(ref)
        except KeyError:
            return False
        return True

    # -- sections -----------------------------------------------------------------------
    def build(self, data: Any) -> Graph:
        if not isinstance(data, MarkedDict):
            loc = getattr(data, "loc", None) or SourceLocation(self.path, 1, 1)
            raise GraphError(f"a graph file must be a mapping with 'flowgrad: {SCHEMA_VERSION}',"
                             f" 'inputs', 'params', 'nodes' and 'outputs'; got "
                             f"{_describe(data)}", loc=loc)
        self.keys(data, TOP_KEYS, "the graph", required=("flowgrad", "nodes"))
        version = data.get("flowgrad")
        if "flowgrad" in data and version != SCHEMA_VERSION:
            self.error(f"unsupported schema version {version!r}; this flowgrad reads "
                       f"'flowgrad: {SCHEMA_VERSION}'", data.value_locs["flowgrad"])
        name = self.typed(data, "name", (str,), "the graph", default=None)
        seed = self.typed(data, "seed", (int,), "the graph", default=0)
        self.graph = graph = Graph(name or _stem(self.path), source=self.path)
        if "doc" in data:
            graph.meta["doc"] = data["doc"]
        if self.expansion is not None and self.expansion.record:
            graph.meta["blocks"] = self.expansion.record
        weights = self.typed(data, "weights", (str,), "the graph")
        if weights is not None:
            self.read_weights(weights, data.value_locs["weights"])
        sections = {}
        for section in ("inputs", "params", "constants", "nodes"):
            if section in data and data[section] is not None:
                sections[section] = self.mapping(data[section], f"'{section}'",
                                                 data.value_locs, section)
        for entry, d in (sections.get("inputs") or {}).items():
            self.input(entry, d, sections["inputs"])
        self.allocate = not sections.get("params") or self.fits(sections["params"])
        for entry, d in (sections.get("params") or {}).items():
            self.param(entry, d, sections["params"], seed)
        for entry, d in (sections.get("constants") or {}).items():
            self.const(entry, d, sections["constants"])
        nodes = sections.get("nodes") or {}
        wiring = [self.node(entry, d, nodes) for entry, d in nodes.items()]
        for item in wiring:
            if item is not None:
                self.wire(*item)
        self.aliases(data)
        self.outputs(data)
        return graph

    def aliases(self, data: MarkedDict) -> None:
        """``aliases: {name: ref}``: other names of values, e.g. an ONNX model's own names
        (``0.weight``, ``input.1``) that a YAML file cannot declare, written by ``convert``.
        Each resolves wherever a value is named (outputs, feeds, gradients, objectives) and is
        what ``export`` calls the value (:meth:`flowgrad.Graph.add_alias`)."""
        if data.get("aliases") is None:
            return
        section = self.mapping(data["aliases"], "'aliases'", data.value_locs, "aliases")
        if section is None:
            return
        for name, ref in section.items():
            loc = section.key_locs[name]
            if not isinstance(name, str) or not name:
                self.error(f"an alias must be a non-empty string, got {_describe(name)} "
                           "(quote it)", loc)
            elif name in self.declared:
                self.error(f"alias '{name}' is already declared as a name in the graph", loc)
            elif not isinstance(ref, str):
                self.error(f"alias '{name}' must name a value (a string), got "
                           f"{_describe(ref)}", section.value_locs[name])
            else:
                try:
                    self.graph.add_alias(name, ref)
                except KeyError as e:
                    if not self.failed(ref):
                        self.error(f"alias '{name}': {e.args[0]}", section.value_locs[name])

    def input(self, name: str, d: Any, section: MarkedDict) -> None:
        loc = section.key_locs[name]
        if not self.declare(name, loc):
            return
        d = self.mapping(d, f"input '{name}'", section.value_locs, name)
        if d is None:
            return
        what = f"input '{name}'"
        self.keys(d, INPUT_KEYS, what, required=("shape",))
        shape = self.shape(d, what, free=True)
        dtype = self.dtype(d, what)
        if shape is not None and nbytes([n or 1 for n in shape]) > MAX_SAMPLE_BYTES:
            self.error(f"one sample of {what} (shape {list(shape)}) would take "
                       f"{size_text(nbytes(shape))} as float64, more than the "
                       f"{size_text(MAX_SAMPLE_BYTES)} an input may hold", d.value_locs["shape"])
            return
        batch = self.typed(d, "batch", (int,), what)   # a model's own fixed batch (convert)
        if batch is not None and batch < 1:
            self.error(f"'batch' of {what} must be a positive integer, got {batch}",
                       d.value_locs["batch"])
            return
        if shape is not None and dtype is not None:
            self.graph.add_input(name, Spec((batch,) + shape, dtype), loc=loc)

    def dtype(self, d: MarkedDict, what: str) -> str | None:
        name = self.typed(d, "dtype", (str,), what, default="float")
        if name not in DTYPES:
            self.error(f"unknown dtype '{name}' for {what}{did_you_mean(name, DTYPES)} "
                       f"(dtypes: {', '.join(DTYPES)}; float inputs take the plan's precision)",
                       d.value_locs["dtype"])
            return None
        return DTYPES[name]

    def param(self, name: str, d: Any, section: MarkedDict, graph_seed: int) -> None:
        loc = section.key_locs[name]
        if not self.declare(name, loc):
            return
        what = f"param '{name}'"
        d = self.mapping(d, what, section.value_locs, name)
        if d is None:
            return
        self.keys(d, PARAM_KEYS, what, required=() if self.weights is not None else ("init",))
        shape = self.shape(d, what)
        trainable = self.typed(d, "trainable", (bool,), what, default=True)
        lr_mult = self.number(d, "lr_mult", what, default=1.0)
        decay_mult = self.number(d, "decay_mult", what, default=1.0)
        init = d.get("init")
        if init is None:
            value = self.stored(name, shape, what, loc)
        else:
            init = self.mapping(init, f"'init' of {what}", d.value_locs, "init")
            if init is None:
                return
            value = self.init_value(init, shape, what, param_seed(graph_seed, name))
        if value is not None:
            self.graph.add_param(name, value, trainable=trainable, lr_mult=float(lr_mult),
                                 decay_mult=float(decay_mult), loc=loc,
                                 init=None if init is None else plain(init))

    def read_weights(self, path: str, loc: SourceLocation) -> None:
        """Read the ``weights`` file, relative to the graph file: an ``.npz`` of arrays named
        after the params, or a ``flowgrad train`` checkpoint (its params), through the one
        checked reader (a damaged file is a located error)."""
        from ..arrays import read_arrays
        from ..checkpoint import META, load_checkpoint
        full = os.path.join(os.path.dirname(os.path.abspath(self.path)), path)
        try:
            arrays = read_arrays(full, "weights file", text={META})
            self.weights = load_checkpoint(full).params if META in arrays else arrays
        except FlowgradError as e:
            self.error(e.diagnostics[0].message, loc)

    def stored(self, name: str, shape, what: str, loc: SourceLocation):
        """The value of ``name`` from the weights file, checked against its declared shape."""
        if self.weights is None:
            return None
        if name not in self.weights:
            self.error(f"{what} has no 'init' and the weights file has no array '{name}'", loc)
            return None
        value = self.weights[name]
        if shape is not None and tuple(value.shape) != shape:
            self.error(f"{what} declares shape {list(shape)} but the weights file holds "
                       f"{list(value.shape)}", loc)
            return None
        return value

    def init_value(self, init: MarkedDict, shape, what: str, default_seed: int):
        kinds = ("value",) + tuple(INITIALIZERS)
        kind = init.get("kind")
        if kind not in kinds:
            where = init.value_locs.get("kind", init.loc)
            got = "no 'kind'" if kind is None else f"'{kind}'"
            self.error(f"unknown initializer {got} for {what}"
                       f"{did_you_mean(str(kind), kinds)} (kinds: {', '.join(kinds)})", where)
            return None
        if kind == "value":
            self.keys(init, ("kind", "value"), f"the 'value' initializer of {what}",
                      required=("value",))
            if "value" not in init:
                return None
            value = self.array(init["value"], init.value_locs["value"], what)
            if value is not None and shape is not None and value.shape != shape:
                self.error(f"{what} declares shape {list(shape)} but its value has shape "
                           f"{list(value.shape)}", init.value_locs["value"])
                return None
            return value
        _, required, optional = INITIALIZERS[kind]
        allowed = ("kind", "seed") + required + optional
        self.keys(init, allowed, f"the '{kind}' initializer of {what}", required=required)
        if shape is None:
            self.error(f"{what} needs a 'shape' for the '{kind}' initializer", init.loc)
            return None
        args = {}
        for key in required + optional:
            v = self.number(init, key, f"the '{kind}' initializer of {what}",
                            low=0 if key in _SCALES else None)
            if v is not None:
                args[key] = v
        if any(k in init and k not in args for k in required + optional) \
                or any(k not in args for k in required) or not self.allocate:
            return None
        span = args.get("high", 1.0) - args.get("low", -1.0)
        if kind == "uniform" and not (is_finite(span) and span >= 0):
            self.error(f"the 'uniform' initializer of {what} needs low <= high, with a range "
                       f"a float can hold; got low {args.get('low', -1.0)!r}, high "
                       f"{args.get('high', 1.0)!r}", init.loc)
            return None
        seed = self.typed(init, "seed", (int,), f"the initializer of {what}", default=default_seed)
        if seed < 0:
            self.error(f"'seed' of the initializer of {what} must be a non-negative integer, "
                       f"got {seed}", init.value_locs["seed"])
            return None
        return initialize(kind, shape, seed, **args)

    def array(self, value: Any, loc: SourceLocation, what: str) -> np.ndarray | None:
        array = finite_array(plain(value))
        if array is None:
            self.error(f"the value of {what} must be a finite number or a (nested, rectangular) "
                       f"list of finite numbers", loc)
        return array

    def const(self, name: str, d: Any, section: MarkedDict) -> None:
        loc = section.key_locs[name]
        if not self.declare(name, loc):
            return
        what = f"constant '{name}'"
        d = self.mapping(d, what, section.value_locs, name)
        if d is None:
            return
        self.keys(d, CONST_KEYS + ("shape",), what,
                  required=() if self.weights is not None else ("value",))
        if "value" not in d:
            value = self.stored(name, self.shape(d, what), what, loc)
            if value is not None:
                self.graph.add_const(name, value, loc=loc)
            return
        dtype = self.dtype(d, what)
        if dtype is None:
            return
        value = self.array(d["value"], d.value_locs["value"], what)
        if value is not None:
            self.graph.add_const(name, value if dtype == "float32" else value.astype(dtype),
                                 loc=loc)

    def node(self, name: str, d: Any, section: MarkedDict):
        loc = section.key_locs[name]
        if not self.declare(name, loc):
            return None
        what = f"node '{name}'"
        d = self.mapping(d, what, section.value_locs, name)
        if d is None:
            return None
        if "op" not in d:
            self.error(f"{what} needs 'op' (the op type, e.g. 'op: dense')", d.loc)
            return None
        op_type = d["op"]
        if not isinstance(op_type, str):
            self.error(f"'op' of {what} must be a string", d.value_locs["op"])
            return None
        try:
            op_cls = self.registry.get(op_type)
        except PluginError:
            self.error(unknown_op_message(op_type, self.registry.ops), d.value_locs["op"])
            return None
        attrs = {k: plain(v) for k, v in d.items() if k not in NODE_KEYS}
        try:
            op = op_cls(**attrs)
        except AttrError as e:
            # an unknown or missing attribute is a key problem; a bad value, a value problem
            known = e.attr in op_cls.attrs and e.attr in attrs
            where = d.value_locs[e.attr] if known else d.key_locs.get(e.attr)
            self.error(f"{what}: {e}", where or d.loc)
            return None
        sources = self.inputs_of(name, op, d)
        if sources is None:
            return None
        self.graph.add_op(name, op, num_inputs=len(sources), loc=loc)
        return name, sources

    def inputs_of(self, name: str, op, d: MarkedDict):
        """``[(ref, locs, key) or None]`` by input position, from the node's ``in``: the
        location of each ref is ``locs[key]``, made only if an error needs it."""
        what = f"node '{name}' ({op.type})"
        ports = op.input_names
        if "in" not in d:
            if op.variadic or any(p not in op.optional_inputs for p in ports):
                self.error(f"{what} needs 'in' (its inputs: {_ports(op)})", d.loc)
                return None
            return [None] * len(ports)
        value, locs = d["in"], d.value_locs      # the location of 'in' is locs["in"]
        if isinstance(value, str):
            entries = [(value, locs, "in")]
        elif isinstance(value, MarkedList):
            entries = [(ref, value.item_locs, i) for i, ref in enumerate(value)]
        elif isinstance(value, MarkedDict):
            if op.variadic:
                self.error(f"{what} takes a list of inputs, not a mapping", locs["in"])
                return None
            sources: list = [None] * len(ports)
            for port, ref in value.items():
                if port not in ports:
                    self.error(f"{what} has no input '{port}'{did_you_mean(port, ports)} "
                               f"(inputs: {_ports(op)})", value.key_locs[port])
                    continue
                sources[ports.index(port)] = (ref, value.value_locs, port)
            return self.check_arity(what, op, sources, locs)
        else:
            self.error(f"'in' of {what} must be a name, a list of names or a mapping from its "
                       f"inputs ({_ports(op)}) to names; got {_describe(value)}", locs["in"])
            return None
        if op.variadic:
            if len(entries) < op.min_inputs:
                self.error(f"{what} needs at least {op.min_inputs} inputs, got {len(entries)}",
                           locs["in"])
                return None
            return entries
        if len(entries) > len(ports):
            self.error(f"{what} takes at most {len(ports)} input(s) ({_ports(op)}), got "
                       f"{len(entries)}", locs["in"])
            return None
        return self.check_arity(what, op, entries + [None] * (len(ports) - len(entries)), locs)

    def check_arity(self, what, op, sources, locs):
        missing = [p for p, s in zip(op.input_names, sources)
                   if s is None and p not in op.optional_inputs]
        if missing:
            self.error(f"{what} is missing input(s) {', '.join(missing)} (inputs: {_ports(op)}); "
                       f"name them with a mapping, e.g. in: {{{op.input_names[0]}: ..., "
                       f"{missing[-1]}: ...}}", locs["in"])
            return None
        return sources

    def wire(self, name: str, sources) -> None:
        for position, entry in enumerate(sources):
            if entry is None:
                continue
            ref, locs, key = entry
            if not isinstance(ref, str):
                self.error(f"inputs are named by strings, got {_describe(ref)}", locs[key])
                self.broken.add(name)
                continue
            try:
                src, port = self.graph.resolve(ref)
            except KeyError as e:
                if not self.failed(ref):
                    self.error(str(e.args[0]), locs[key])
                self.broken.add(name)
                continue
            self.graph.connect(src, port, name, position)

    def failed(self, ref: str) -> bool:
        """True if ``ref`` names something declared whose own error is already reported."""
        if self.expansion is not None and self.expansion.failed:
            parts = ref.split(".")
            if any(".".join(parts[:i]) in self.expansion.failed for i in range(1, len(parts) + 1)):
                return True
        base = ref if ref in self.declared else ref.rpartition(".")[0]
        return base in self.declared and base not in self.graph.dag

    def outputs(self, data: MarkedDict) -> None:
        refs = data.get("outputs")
        if refs is None:
            graph = self.graph
            self.graph.outputs = [n for n in graph.ops if graph.dag.out_degree(n) == 0]
            return
        if not isinstance(refs, MarkedList):
            refs = MarkedList([refs])
            refs.item_locs = [data.value_locs["outputs"]]
        for ref, loc in zip(refs, refs.item_locs):
            if not isinstance(ref, str):
                self.error(f"outputs are named by strings, got {_describe(ref)}", loc)
                continue
            try:
                self.graph.resolve(ref)
            except KeyError as e:
                if not self.failed(ref):
                    self.error(f"unknown output: {e.args[0]}", loc)
                continue
            self.graph.outputs.append(ref)


def _ports(op) -> str:
    if op.variadic:
        return f"{op.input_names[0]}... (a list)"
    return ", ".join(p + (" (optional)" if p in op.optional_inputs else "")
                     for p in op.input_names)



def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _kinds(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]
