"""Fuzz target: YAML graph files, read by ``flowgrad check --no-gradients`` (and ``show``).

Seeds are the repo's ``graphs/*.yaml`` and a few small files exercising what those do not:
blocks with arguments, ``repeat`` and ``each``, an ``include`` of a blocks file (written into
the case folder by :func:`argv`), merge keys, ``train:`` and ``visualize:`` sections.
Mutation is structure-aware most of the time — the file is composed into YAML nodes (anchors,
tags and all), edited the way a careless or hostile author would (a scalar replaced by an odd
number, a wrong type, a tag, deep nesting or an alias bomb; keys deleted, duplicated, renamed
to a sibling's name or unknown; list items dropped or repeated; merge keys added) and
serialized again — and byte-level otherwise, so the reader's encoding and character checks are
reached too.  ``--no-gradients`` keeps each case cheap: the boundary is the file, not the
gradient check (which ``tests/test_fuzz.py``'s ONNX target and the op tests cover).
"""
from __future__ import annotations

import functools
import glob
import os
import random
import zlib

import yaml

from tests.fuzz import harness

NAME = "yaml"
SUFFIX = ".yaml"

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: the blocks file the include seed names; argv() writes it next to every case
LIBRARY_NAME = "lib.yaml"
LIBRARY = """\
flowgrad: 1
blocks:
  act:
    args: {kind: relu}
    inputs: [x]
    nodes: {a: {op: $kind, in: x}}
"""

SMALL = [
    """\
flowgrad: 1
name: blocks
inputs: {x: {shape: [4]}}
blocks:
  fc:
    args: {cin: ~, cout: ~, bias: true}
    inputs: [x]
    params:
      W: {shape: [$cin, $cout], init: {kind: glorot_uniform, seed: 3}}
      b: {shape: [$cout], init: {kind: normal, std: 0.1}}
    nodes:
      z: {op: dense, in: {x: x, W: W, b: b}}
      h: {op: relu, in: z, if: $bias}
    outputs: [h]
nodes:
  one: {block: fc, in: x, with: {cin: 4, cout: 4}}
  many: {block: fc, in: one, repeat: 3, with: {cin: 4, cout: 4}, each: [{}, {bias: false}, {}]}
  out: {op: reduce_mean, in: many}
outputs: [out]
""",
    f"""\
flowgrad: 1
include: [{LIBRARY_NAME}]
inputs: {{x: {{shape: [3]}}}}
nodes:
  a1: {{block: act, in: x}}
  a2: {{block: act, in: a1, repeat: 2, with: {{kind: tanh}}}}
outputs: [a2]
""",
    """\
flowgrad: 1
inputs: {x: {shape: [2]}, label: {shape: [], dtype: int64}}
params:
  W: &w {shape: [2, 3], init: {kind: uniform, low: -1, high: 1}, lr_mult: 2}
  V: {<<: *w, decay_mult: 0.5}
  b: {shape: [3], init: {kind: constant, value: 0.5}}
constants: {c: {value: [1.0, 2.0, 3.0]}}
nodes:
  z: {op: dense, in: {x: x, W: W, b: b}}
  y: {op: add, in: [z, c]}
  loss: {op: softmax_cross_entropy, in: {logits: y, labels: label}}
outputs: [loss]
train:
  optimizer: {kind: sgd, lr: 1e-2, momentum: 0.9}
  epochs: 2
  batch_size: 8
visualize:
  steps: 4
""",
]


@functools.cache
def seeds() -> list[bytes]:
    out = []
    for path in sorted(glob.glob(os.path.join(_ROOT, "graphs", "*.yaml"))):
        with open(path, "rb") as f:
            out.append(f.read())
    return out + [text.encode() for text in SMALL]


def argv(path: str, workdir: str) -> list[str]:
    with open(os.path.join(workdir, LIBRARY_NAME), "w", encoding="utf-8") as f:
        f.write(LIBRARY)
    with open(path, "rb") as f:
        if zlib.crc32(f.read()) % 5 == 0:        # a fifth of the cases: ``show`` reads them
            return ["show", path]
    return ["check", "--no-gradients", path]


# -- mutation --------------------------------------------------------------------------------

def mutate(data: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.25:
        return harness.byte_mutation(data, rng)
    try:
        root = yaml.compose(data.decode("utf-8"), Loader=_LOADER)
    except (yaml.YAMLError, UnicodeDecodeError):
        return harness.byte_mutation(data, rng)
    if root is None:
        return harness.byte_mutation(data, rng)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        nodes = list(_walk(root))
        rng.choice(MUTATIONS)(rng, root, nodes)
    try:
        out = yaml.serialize(root, Dumper=_DUMPER, width=100).encode()
    except (yaml.YAMLError, RecursionError, ValueError, UnicodeError):
        return harness.byte_mutation(data, rng)            # nodes no emitter can write
    return harness.byte_mutation(out, rng, 1) if rng.random() < 0.1 else out


#: libyaml where PyYAML has it: composing and emitting whole graphs is most of a mutation
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _walk(node, seen=None):
    """Every node once (aliases make the tree a graph), collections first."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    yield node
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _walk(key, seen)
            yield from _walk(value, seen)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _walk(item, seen)


_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"

#: (tag, text) scalars a graph file should never hold where a number or a name goes
ODD_SCALARS = [(_INT, "0"), (_INT, "-1"), (_INT, "-7"), (_INT, "2147483648"),
               (_INT, "9223372036854775808"), (_INT, str(10**400)), (_INT, "99999999999"),
               (_INT, "1000000000"), (_INT, "65536"), (_FLOAT, "1.0e+400"), (_FLOAT, ".nan"),
               (_FLOAT, ".inf"), (_FLOAT, "-.inf"), (_FLOAT, "-0.0"), (_FLOAT, "1.0e-320"),
               (_FLOAT, "0.5"), ("tag:yaml.org,2002:bool", "true"),
               ("tag:yaml.org,2002:null", "null"), (_STR, ""), (_STR, "x"), (_STR, "$cin"),
               (_STR, "$(cin * 1000000)"), (_STR, "$(1/0)"), (_STR, "${"), (_STR, "a.b.c"),
               (_STR, "#x"), (_STR, "relu"), (_STR, "dense"), (_STR, "\x00"),
               (_STR, "é" * 3), ("tag:yaml.org,2002:binary", "aGVsbG8="),
               ("tag:yaml.org,2002:timestamp", "2001-12-14"),
               (_INT, "abc"), (_FLOAT, "x"), ("tag:yaml.org,2002:python/name:os.system", ""),
               ("!local", "x"), ("tag:yaml.org,2002:set", "")]
ODD_KEYS = ["bogus", "op", "in", "shape", "init", "block", "repeat", "each", "with", "args",
            "if", "value", "kind", "std", "seed", "dtype", "doc", "<<", "flowgrad", "nodes",
            "include", "blocks", "train", "visualize", "outputs", "1", "no"]


def _scalar(tag: str, text: str) -> yaml.ScalarNode:
    return yaml.ScalarNode(tag, text)


def _collections(nodes):
    return [n for n in nodes if isinstance(n, (yaml.MappingNode, yaml.SequenceNode))]


def replace_scalar(rng, root, nodes):
    scalars = [n for n in nodes if isinstance(n, yaml.ScalarNode)]
    if scalars:
        target = rng.choice(scalars)
        target.tag, target.value = rng.choice(ODD_SCALARS)
        target.style = None


def replace_with_collection(rng, root, nodes):
    """A value where a scalar went: an empty or odd list or mapping, or a deep nest."""
    parent = rng.choice(_collections(nodes) or [root])
    slots = _slots(parent)
    if not slots:
        return
    depth = rng.choice((1, 2, 70, 300))
    value = _scalar(*rng.choice(ODD_SCALARS))
    for _ in range(depth):
        value = yaml.SequenceNode("tag:yaml.org,2002:seq", [value], flow_style=True) \
            if rng.random() < 0.5 else yaml.MappingNode(
                "tag:yaml.org,2002:map", [(_scalar(_STR, "k"), value)], flow_style=True)
    _set(parent, rng.choice(slots), value)


def alias(rng, root, nodes):
    """A value replaced by another one (shared: serialized as an anchor and an alias), or by
    a billion-laughs tower of aliases."""
    parent = rng.choice(_collections(nodes) or [root])
    slots = _slots(parent)
    if not slots:
        return
    if rng.random() < 0.3:
        level = _scalar(_STR, "lol")
        for _ in range(rng.randint(3, 10)):
            level = yaml.SequenceNode("tag:yaml.org,2002:seq", [level] * rng.randint(2, 10),
                                      flow_style=True)
        _set(parent, rng.choice(slots), level)
    else:
        _set(parent, rng.choice(slots), rng.choice(nodes))     # may be an ancestor: a cycle


def tag(rng, root, nodes):
    target = rng.choice(nodes)
    target.tag = rng.choice(["tag:yaml.org,2002:str", "tag:yaml.org,2002:int",
                             "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq",
                             "tag:yaml.org,2002:binary", "tag:yaml.org,2002:omap",
                             "tag:yaml.org,2002:python/object:os.system", "!custom"])


def delete(rng, root, nodes):
    parent = rng.choice(_collections(nodes) or [root])
    if isinstance(parent, (yaml.MappingNode, yaml.SequenceNode)) and parent.value:
        del parent.value[rng.randrange(len(parent.value))]


def duplicate(rng, root, nodes):
    parent = rng.choice(_collections(nodes) or [root])
    if isinstance(parent, (yaml.MappingNode, yaml.SequenceNode)) and parent.value:
        i = rng.randrange(len(parent.value))
        parent.value.insert(rng.randrange(len(parent.value) + 1), parent.value[i])


def rename_key(rng, root, nodes):
    """A key renamed to a sibling's name (a duplicate), to an odd or known key, or two
    entries' names swapped (wiring that now points elsewhere)."""
    maps = [n for n in nodes if isinstance(n, yaml.MappingNode) and n.value]
    if not maps:
        return
    m = rng.choice(maps)
    i = rng.randrange(len(m.value))
    key, value = m.value[i]
    choice = rng.random()
    if choice < 0.3:
        other = m.value[rng.randrange(len(m.value))][0]
        new = yaml.ScalarNode(other.tag, other.value) if isinstance(other, yaml.ScalarNode) \
            else other
    elif choice < 0.6 and len(m.value) > 1:
        j = rng.randrange(len(m.value))
        m.value[i], m.value[j] = (m.value[j][0], value), (key, m.value[j][1])
        return
    else:
        name = rng.choice(ODD_KEYS)
        new = _scalar("tag:yaml.org,2002:merge" if name == "<<" else _STR, name)
    m.value[i] = (new, value)


def add_key(rng, root, nodes):
    maps = [n for n in nodes if isinstance(n, yaml.MappingNode)]
    if not maps:
        return
    m = rng.choice(maps)
    name = rng.choice(ODD_KEYS)
    if name == "<<":
        others = [n for n in maps if n is not m] or maps
        value = rng.choice(others) if rng.random() < 0.7 else _scalar(*rng.choice(ODD_SCALARS))
        key = _scalar("tag:yaml.org,2002:merge", "<<")
    else:
        key = _scalar(_STR, name)
        value = rng.choice(nodes) if rng.random() < 0.5 else _scalar(*rng.choice(ODD_SCALARS))
    m.value.insert(rng.randrange(len(m.value) + 1), (key, value))


def swap_names(rng, root, nodes):
    """Two string scalars (often node names in ``in:``) exchange values."""
    strings = [n for n in nodes if isinstance(n, yaml.ScalarNode) and n.tag == _STR]
    if len(strings) > 1:
        a, b = rng.sample(strings, 2)
        a.value, b.value = b.value, a.value


def _slots(parent):
    if isinstance(parent, yaml.MappingNode):
        return [("value", i) for i in range(len(parent.value))]
    if isinstance(parent, yaml.SequenceNode):
        return [("item", i) for i in range(len(parent.value))]
    return []


def _set(parent, slot, value):
    kind, i = slot
    if kind == "value":
        parent.value[i] = (parent.value[i][0], value)
    else:
        parent.value[i] = value


MUTATIONS = [replace_scalar, replace_scalar, replace_scalar, replace_with_collection, alias,
             tag, delete, delete, duplicate, rename_key, add_key, swap_names]
