"""Blocks, repeats and includes: parameterized sub-graphs, expanded before the graph is built.

    include: [common.yaml]                 # more blocks, relative to this file
    blocks:
      conv_bn:
        args: {cin: ~, cout: ~, stride: 1} # ~ (null): the instance must give it
        inputs: [x]
        params: {W: {shape: [$cout, $cin, 3, 3], init: {kind: he_normal}}}
        nodes:
          conv: {op: conv, in: {x: x, W: W}, strides: [$stride, $stride], pads: [1, 1, 1, 1]}
        outputs: [conv]                    # default: the last node
    nodes:
      c1: {block: conv_bn, in: x, with: {cin: 3, cout: 16}}
      s1: {block: conv_bn, repeat: 2, in: c1, with: {cin: 16, cout: 16}, each: [{stride: 2}, {}]}

Why in the front end: expansion hands the builder an ordinary graph file — plain params,
constants and nodes whose names are namespaced by instance (``c1.W``, ``s1.block2.conv``) — so
the passes, the plan, checkpoints and ONNX export see a graph like any other.  Every location
in an expanded entry is an :class:`~.block_sites.InstanceLocation` (the place in the body plus
the instantiation sites), so any later error about it reads both.  The only other trace left
is :attr:`Expansion.record`, which instance each namespace is (``graph.meta["blocks"]``, for
``flowgrad show --collapse-blocks``).

A block sees only its own names: its inputs, params, constants and nodes (outer values, such
as a weight tied across instances, come in through ``inputs``).  Its strings may use its
arguments (:mod:`.block_args`).  An instance is named by its first output; ``repeat: N``
chains N instances (``NAME.block1`` ... ``NAME.blockN``), each one's first output feeding the
next one's first input, with ``each:`` giving per-instance arguments.  A node of a body with
``if:`` false is left out, and naming it then means its first input (an optional layer, such
as a projection shortcut).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import DiagnosticList, SourceLocation, did_you_mean, unknown_key
from .block_args import ArgError, substitute
from .block_library import LOCAL, Block, Library
from .block_sites import Fallback, Section, Site, Within, WithinItems, shallow, within
from .yaml_source import MarkedDict, MarkedList, plain

INSTANCE_KEYS = ("block", "in", "with", "repeat", "each", "doc")
#: the largest ``repeat``, the most params, constants and nodes all instances of a file may
#: make, and the most values they may copy from block bodies: a few lines of nested repeats
#: (or a body holding an aliased value) could otherwise ask for billions, and expansion would
#: run out of memory or time before saying anything
MAX_REPEAT = 10_000
MAX_EXPANDED = 20_000
MAX_COPIED = 500_000


def uses_blocks(data: Any) -> bool:
    """Whether a file needs expanding: it defines or includes blocks, or a node names one
    (a quick look, so files without blocks load as fast as before)."""
    if not isinstance(data, MarkedDict):
        return False
    if "blocks" in data or "include" in data:
        return True
    nodes = data.get("nodes")
    return isinstance(nodes, MarkedDict) and any(
        type(d) is MarkedDict and "block" in d for d in nodes.values())


@dataclass
class _Scope:
    """One instance being expanded: names are translated and strings substituted here."""

    prefix: str
    block: Block
    inputs: dict[str, str]          # the block's input -> the caller's (full) reference
    args: dict[str, Any]
    sites: tuple[Site, ...]


@dataclass
class Expansion:
    """What :func:`expand` gives the builder."""

    data: MarkedDict                # the file, blocks expanded
    record: dict[str, dict]         # instance -> {"block": name, "repeat": count (if any)}
    failed: set[str]                # names whose own error is already reported


def expand(data: MarkedDict, path: str, errors: DiagnosticList) -> Expansion:
    """The file ``data`` (read from ``path``) with its blocks expanded; every mistake is
    added to ``errors``, located."""
    return _Expander(path, errors).run(data)


class _Expander:
    def __init__(self, path: str, errors: DiagnosticList):
        self.path = path
        self.errors = errors
        self.library = Library(path, errors)
        self.aliases: dict[str, str] = {}          # instance or left-out node -> what it means
        self.record: dict[str, dict] = {}
        self.failed: set[str] = set()
        self.reported: set[tuple] = set()
        self.expanded = 0                          # entries made by instances so far
        self.copied = 0                            # values copied from bodies so far
        self.over = False                          # past MAX_EXPANDED: expand no more
        self.costs: dict[str, int] = {}            # block -> entries one instance makes

    def error(self, message: str, loc: SourceLocation | None) -> None:
        """Add a mistake once: the same one in every instance of a block is reported at its
        first instance only."""
        key = (message, loc.path, loc.line, loc.col) if loc is not None else (message,)
        if key not in self.reported:
            self.reported.add(key)
            self.errors.add(message, loc)

    # -- the file ---------------------------------------------------------------------------
    def run(self, data: MarkedDict) -> Expansion:
        self.library.read(data, self.path, [self.path])
        # a section that is not a mapping is left as it is, for the builder to report
        kept = {s: data.get(s) for s in LOCAL if data.get(s) is not None
                and not isinstance(data[s], MarkedDict)}
        self.sections = {s: Section(None if s == "nodes" else data.get(s),
                                     data.value_locs.get(s, data.loc)) for s in LOCAL}
        taken = {}
        for section in ("inputs", "params", "constants"):
            if isinstance(data.get(section), MarkedDict):
                taken.update(data[section].key_locs)
        nodes = data.get("nodes")
        if isinstance(nodes, MarkedDict):
            for name, d in nodes.items():
                if type(d) is MarkedDict and "block" in d:
                    self.top_instance(name, d, nodes, taken)
                else:
                    self.sections["nodes"].add(name, d, nodes, name, ())
        out = MarkedDict((k, v) for k, v in data.items() if k not in ("blocks", "include"))
        out._source, out._mark = data._source, data._mark
        out.key_locs, out.value_locs = data.key_locs, Fallback(data.value_locs, data.loc)
        for section, built in self.sections.items():
            if section not in kept and (section in data or built.out):
                out[section] = self.resolved_nodes(built.out) if section == "nodes" \
                    else built.out
        if isinstance(out.get("outputs"), (str, MarkedList)):
            out["outputs"] = self.resolved_refs(out["outputs"])
        return Expansion(out, self.record, self.failed)

    def top_instance(self, name: str, d: MarkedDict, nodes: MarkedDict, taken: dict) -> None:
        loc = nodes.key_locs[name]
        if name in taken:
            self.failed.add(name)
            self.error(f"'{name}' is already declared at line {taken[name].line}; every input, "
                       "param, constant and node shares one namespace", loc)
            return
        self.instance(name, d, loc, None)

    # -- instances --------------------------------------------------------------------------
    def instance(self, name: str, d: MarkedDict, loc: SourceLocation,
                 scope: _Scope | None) -> None:
        """Expand the instance ``d`` named ``name`` (full), written at ``loc`` (its key, in
        its own file) in ``scope`` (None: the graph file itself)."""
        if self.over:          # the one error saying so is reported
            self.failed.add(name)
            return
        if scope is None:      # '$' has no arguments to name in the graph file itself
            d = self.copy(d, loc, {}, ())
            if d is _FAILED:
                self.failed.add(name)
                return
        outer = scope.sites if scope else ()
        here = d.value_locs.__getitem__        # a body's copy is located through its sites
        for key in d:
            if key not in INSTANCE_KEYS:
                self.error(unknown_key(key, f"block instance '{name}'", INSTANCE_KEYS),
                           d.key_locs[key])
        blocks = self.library.blocks
        block = blocks.get(d["block"]) if isinstance(d["block"], str) else None
        if block is None:
            self.failed.add(name)
            if isinstance(d["block"], str) and d["block"] in self.library.broken \
                    or self.library.incomplete:         # its definition's mistake is reported
                return
            known = f" (blocks: {', '.join(blocks)})" if blocks else " (no blocks are " \
                "defined: add a 'blocks' section or an 'include')"
            shown = d["block"] if isinstance(d["block"], str) else plain(d["block"])
            self.error(f"unknown block {shown!r}{did_you_mean(str(shown), blocks)}{known}",
                       here("block"))
            return
        active = [s.block for s in reversed(outer)]
        if block.name in active:
            self.failed.add(name)
            chain = " -> ".join(active[active.index(block.name):] + [block.name])
            self.error(f"block '{block.name}' instantiates itself: {chain}", here("block"))
            return
        inputs = self.bind(name, block, d, here, scope)
        count, each = self.repetitions(name, d, here)
        given = d.get("with", MarkedDict())
        if not isinstance(given, MarkedDict):
            self.error(f"'with' of '{name}' must be a mapping from argument names to values",
                       here("with"))
            given = None
        if inputs is None or count is None or given is None:
            self.failed.add(name)
            return
        wanted = count * self.cost(block.name, ())
        if self.expanded + wanted > MAX_EXPANDED:
            self.failed.add(name)
            self.over = True
            self.error(f"'{name}' would make {wanted} params, constants and nodes, more than "
                       f"the {MAX_EXPANDED} the block instances of a file may make",
                       here("repeat") if "repeat" in d else here("block"))
            return
        if each is None:
            self.record[name] = {"block": block.name}
            self.expand_one(block, name, inputs, [given], (Site(loc, name, block.name),) + outer)
            return
        self.record[name] = {"block": block.name, "repeat": count}
        for k in range(count):
            if self.over:
                break
            full = f"{name}.block{k + 1}"
            self.record[full] = {"block": block.name}
            if k and block.inputs:
                inputs = dict(inputs, **{block.inputs[0]: f"{name}.block{k}"})
            self.expand_one(block, full, inputs, [given] + ([each[k]] if each[k] else []),
                            (Site(loc, full, block.name),) + outer)
        self.aliases[name] = f"{name}.block{count}"

    def cost(self, name: str, active: tuple[str, ...]) -> int:
        """The entries one instance of block ``name`` makes, its nested instances included
        (a repeat given by an argument counted once), known before expanding it."""
        block = self.library.blocks.get(name)
        if name in self.costs or block is None or name in active:   # a cycle is refused
            return self.costs.get(name, 0)
        total = sum(len(block.body.get(s) or ()) for s in LOCAL)
        for d in (block.body.get("nodes") or {}).values():
            if type(d) is MarkedDict and isinstance(d.get("block"), str):
                count = d.get("repeat", 1)
                known = type(count) is int and 1 <= count <= MAX_REPEAT
                total += (count if known else 1) * self.cost(d["block"], active + (name,))
        self.costs[name] = total
        return total

    def bind(self, name: str, block: Block, d: MarkedDict, here: Callable,
             scope: _Scope | None) -> dict[str, str] | None:
        """``{block input: caller's reference}`` from the instance's ``in``."""
        ports = block.inputs
        value = d.get("in")
        wanted = f"(inputs of block '{block.name}': {', '.join(ports) or 'none'})"
        if value is None:
            entries = {}
        elif isinstance(value, str):
            entries = {ports[0]: (value, here("in"))} if ports else None
        elif isinstance(value, MarkedList):
            if len(value) > len(ports):
                self.error(f"'{name}' takes at most {len(ports)} input(s), got {len(value)} "
                           f"{wanted}", here("in"))
                return None
            entries = {p: (ref, loc) for p, ref, loc in zip(ports, value, value.item_locs)}
        elif isinstance(value, MarkedDict):
            entries = {}
            for port, ref in value.items():
                if port not in ports:
                    self.error(f"block '{block.name}' has no input '{port}'"
                               f"{did_you_mean(port, ports)} {wanted}", value.key_locs[port])
                    return None
                entries[port] = (ref, value.value_locs[port])
        else:
            entries = None
        if entries is None:
            self.error(f"'in' of '{name}' must be a name, a list or a mapping {wanted}",
                       here("in"))
            return None
        missing = [p for p in ports if p not in entries]
        if missing:
            self.error(f"'{name}' is missing input(s) {', '.join(missing)} {wanted}",
                       here("in") if "in" in d else d.loc)
            return None
        bound = {}
        for port, (ref, loc) in entries.items():
            if not isinstance(ref, str):
                self.error(f"inputs are named by strings, got {plain(ref)!r}", loc)
                return None
            full = self.translate(ref, scope, loc)
            if full is None:
                return None
            bound[port] = full
        return bound

    def repetitions(self, name: str, d: MarkedDict, here: Callable):
        """``(count, per-instance arguments)``: ``(1, None)`` for a single instance."""
        if "repeat" not in d:
            if "each" in d:
                self.error(f"'each' of '{name}' needs 'repeat'", here("each"))
                return None, None
            return 1, None
        count = d["repeat"]
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_REPEAT:
            self.error(f"'repeat' of '{name}' must be an integer from 1 to {MAX_REPEAT}, got "
                       f"{plain(count)!r}", here("repeat"))
            return None, None
        each = d.get("each", [None] * count)
        if not isinstance(each, list) or len(each) != count or not all(
                e is None or isinstance(e, MarkedDict) for e in each):
            self.error(f"'each' of '{name}' must be a list of {count} mappings (the arguments "
                       "of each instance, {} for none)", here("each"))
            return None, None
        return count, each

    def arguments(self, block: Block, name: str, given: list, sites: tuple[Site, ...]):
        """The instance's arguments: ``given`` (mappings, later ones winning), then the
        block's defaults; None after an error."""
        args: dict[str, Any] = {}
        named = set()                   # given, if wrongly: not also reported as missing
        ok = True
        for mapping in given:
            named.update(mapping)
            for key, value in mapping.items():
                if key not in block.args:
                    self.error(f"block '{block.name}' has no argument '{key}'"
                               f"{did_you_mean(key, block.args)} (arguments: "
                               f"{', '.join(block.args) or 'none'})",
                               mapping.key_locs[key])
                    ok = False
                elif not _argument_value(value):
                    self.error(f"argument '{key}' must be a number, a string, true/false or a "
                               f"list of them, got {plain(value)!r}",
                               mapping.value_locs[key])
                    ok = False
                else:
                    args[key] = plain(value)
        missing = [a for a, default in block.args.items() if default is None and a not in named]
        if missing:
            self.error(f"'{name}' needs argument(s) {', '.join(missing)} of block "
                       f"'{block.name}' (give them in 'with')", within(sites[0].loc, sites[1:]))
        if missing or not ok:
            return None
        for arg, default in block.args.items():      # defaults may use earlier arguments
            if arg not in args:
                value = self.copy(default, block.args.value_locs[arg], args, sites)
                if value is _FAILED:
                    return None
                args[arg] = plain(value)
        return args

    def expand_one(self, block: Block, prefix: str, inputs: dict[str, str], given: list,
                   sites: tuple[Site, ...]) -> None:
        """Add one instance's params, constants and nodes, named ``prefix.local``."""
        body = block.body
        self.expanded += sum(len(body.get(s) or ()) for s in LOCAL)
        if self.expanded > MAX_EXPANDED:
            self.failed.add(prefix)
            self.over = True
            self.error(f"the file's block instances make more than {MAX_EXPANDED} params, "
                       f"constants and nodes; '{prefix}' is one too many",
                       within(sites[0].loc, sites[1:]))
            return
        args = self.arguments(block, prefix, given, sites)
        if args is None:
            self.failed.add(prefix)
            return
        scope = _Scope(prefix, block, inputs, args, sites)
        for section in ("params", "constants"):
            entries = body.get(section) or {}
            for local, value in entries.items():
                copied = self.copy(value, entries.value_locs[local], args, sites)
                if copied is _FAILED:
                    self.failed.add(f"{prefix}.{local}")
                    continue
                self.sections[section].add(f"{prefix}.{local}", copied, entries, local, sites)
        nodes = body.get("nodes") or {}
        for local, value in nodes.items():
            self.body_node(scope, local, value, nodes)
        outputs = body.get("outputs")
        if outputs is None:                            # the last node
            refs, locs = list(nodes)[-1:], [nodes.key_locs[list(nodes)[-1]]]
        elif isinstance(outputs, str):
            refs, locs = [outputs], [body.value_locs["outputs"]]
        else:
            refs, locs = outputs, outputs.item_locs
        full = [self.translate(ref, scope, within(loc, sites)) for ref, loc in zip(refs, locs)]
        if full[0] is None:
            self.failed.add(prefix)
        else:
            self.aliases[prefix] = full[0]

    def body_node(self, scope: _Scope, local: str, value: Any, nodes: MarkedDict) -> None:
        full = f"{scope.prefix}.{local}"
        d = self.copy(value, nodes.value_locs[local], scope.args, scope.sites)
        if d is _FAILED:
            self.failed.add(full)
            return
        if isinstance(d, MarkedDict) and "if" in d:
            keep = d.pop("if")
            if isinstance(keep, int):                  # true, false or an integer
                if not keep:
                    self.leave_out(full, d, scope)
                    return
            else:
                self.failed.add(full)
                self.error(f"'if' of '{local}' must be true/false or an integer, got "
                           f"{plain(keep)!r}", d.value_locs["if"])
                return
        loc = nodes.key_locs[local]
        if isinstance(d, MarkedDict) and "block" in d:
            self.instance(full, d, loc, scope)
            return
        if isinstance(d, MarkedDict) and "in" in d and not self.translate_in(d, scope):
            self.failed.add(full)
            return
        self.sections["nodes"].add(full, d, nodes, local, scope.sites)

    def leave_out(self, full: str, d: MarkedDict, scope: _Scope) -> None:
        """A node whose ``if`` is false: naming it means its first input."""
        value = d.get("in")
        if isinstance(value, MarkedList) and value:
            ref, loc = value[0], value.item_locs[0]
        elif isinstance(value, MarkedDict) and value:
            port = next(iter(value))
            ref, loc = value[port], value.value_locs[port]
        else:
            ref, loc = value, d.value_locs.get("in", d.loc)
        if not isinstance(ref, str):
            self.failed.add(full)
            self.error("a node left out by 'if' stands for its first input, so it needs one "
                       "named in 'in'", loc)
            return
        target = self.translate(ref, scope, loc)
        if target is None:
            self.failed.add(full)
        else:
            self.aliases[full] = target

    # -- names --------------------------------------------------------------------------------
    def translate(self, ref: str, scope: _Scope | None, loc: SourceLocation | None) -> str | None:
        """The full reference for ``ref`` as written in ``scope``; None after an error."""
        if scope is None:
            return ref
        head, dot, _ = ref.partition(".")
        if head in scope.inputs:
            if dot:
                self.error(f"'{head}' is an input of block '{scope.block.name}'; it has no "
                           "outputs to pick with '.'", loc)
                return None
            return scope.inputs[head]
        if head in scope.block.locals:
            return f"{scope.prefix}.{ref}"
        known = list(scope.inputs) + list(scope.block.locals)
        self.error(f"unknown value '{ref}' in block '{scope.block.name}'"
                   f"{did_you_mean(ref, known)} (a block sees its inputs, params, constants "
                   "and nodes; pass other values in through its 'inputs')", loc)
        return None

    def translate_in(self, d: MarkedDict, scope: _Scope) -> bool:
        """Translate the references of the node ``d`` (a fresh copy) in place."""
        value = d["in"]
        if isinstance(value, str):
            d["in"] = self.translate(value, scope, d.value_locs["in"])
            return d["in"] is not None
        ok = True
        if isinstance(value, MarkedList):
            slots = [(i, value.item_locs) for i in range(len(value))]
        elif isinstance(value, MarkedDict):
            slots = [(port, value.value_locs) for port in value]
        else:
            return True                               # the builder reports it
        for key, locs in slots:
            if isinstance(value[key], str):
                value[key] = self.translate(value[key], scope, locs[key])
                ok = ok and value[key] is not None
        return ok

    def resolve(self, ref: str) -> str:
        """What ``ref`` means once every instance is expanded (an instance: its first output;
        a left-out node: its first input)."""
        seen = set()
        while ref in self.aliases and ref not in seen:
            seen.add(ref)
            ref = self.aliases[ref]
        return ref

    def resolved_refs(self, value: Any) -> Any:
        """``value`` (a reference or list of them) with instance names resolved, as a copy if
        anything changed; locations are kept."""
        if isinstance(value, str):
            return self.resolve(value)
        if isinstance(value, (MarkedList, MarkedDict)):
            keys = range(len(value)) if isinstance(value, MarkedList) else list(value)
            if not any(isinstance(value[k], str) and value[k] in self.aliases for k in keys):
                return value
            out = shallow(value)
            for k in keys:
                if isinstance(value[k], str):
                    out[k] = self.resolve(value[k])
            return out
        return value

    def resolved_nodes(self, nodes: MarkedDict) -> MarkedDict:
        for name, d in nodes.items():
            if isinstance(d, MarkedDict) and "in" in d:
                new = self.resolved_refs(d["in"])
                if new is not d["in"]:
                    nodes[name] = shallow(d)
                    nodes[name]["in"] = new
        return nodes

    # -- substitution -------------------------------------------------------------------------
    def copy(self, value: Any, loc: SourceLocation, args: Mapping[str, Any],
             sites: tuple[Site, ...]) -> Any:
        """A copy of ``value`` (from a block's body, written at ``loc``) with arguments
        substituted and locations seen through ``sites``; :data:`_FAILED` after an error."""
        self.copied += 1
        if self.copied > MAX_COPIED:
            if not self.over:
                self.over = True
                self.error(f"the file's block instances copy more than {MAX_COPIED} values "
                           "from block bodies (an aliased value repeated in each instance?)",
                           within(loc, sites))
            return _FAILED
        if isinstance(value, MarkedDict):
            out = MarkedDict()
            for key, item in value.items():
                out[key] = self.copy(item, value.value_locs[key], args, sites)
                if out[key] is _FAILED:
                    return _FAILED
            out.key_locs = Within(value.key_locs, sites)
            out.value_locs = Within(value.value_locs, sites)
            out.loc = within(value.loc, sites)
            return out
        if isinstance(value, MarkedList):
            out = MarkedList()
            for item, item_loc in zip(value, value.item_locs):
                out.append(self.copy(item, item_loc, args, sites))
                if out[-1] is _FAILED:
                    return _FAILED
            out.item_locs = WithinItems(value.item_locs, sites)
            out.loc = within(value.loc, sites)
            return out
        if isinstance(value, str) and "$" in value:
            try:
                return substitute(value, args)
            except ArgError as e:
                self.error(str(e), within(loc, sites))
                return _FAILED
        return value


_FAILED = object()   # what :meth:`_Expander.copy` returns after reporting a mistake


def _argument_value(value: Any) -> bool:
    if isinstance(value, list):
        return all(_argument_value(v) for v in value)
    return isinstance(value, (bool, int, float, str))
