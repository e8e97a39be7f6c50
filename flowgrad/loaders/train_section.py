"""The ``train:`` section of a YAML graph, read by the front end into a :class:`TrainConfig`.

    train:
      minimize: loss                 # a scalar output, a list of them, or {output: weight}
      optimizer: {kind: sgd, lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 1e-4}
      schedule: {kind: cosine, warmup_epochs: 1}     # constant | step | cosine (+ warm-up)
      clip_grad_norm: 5.0            # global-norm clipping (omit or null: none)
      epochs: 30
      batch_size: 32
      micro_batch: 8                 # forward+backward in chunks of 8, gradients accumulated
      seed: 0                        # shuffling, splits
      validation_split: 0.1          # held out of the training data for val_* metrics
      test_split: 0.2                # held out by `flowgrad train` before anything else
      metrics: [accuracy]            # accuracy of `logits` against the labels, or scalar outputs
      logits: logits                 # the output whose argmax is the predicted class
      inputs: {features: x, labels: label}          # which graph input takes what
      early_stopping: {monitor: val_loss, patience: 5, min_delta: 0.0, restore_best: true}
      bn_eval: true                  # batch norm keeps its running statistics while training

Every key is optional.  The defaults are those of :class:`TrainConfig` and the constants just
above it, and nowhere else; what the graph implies (the ``loss`` node, the one float input, the
2-d output) fills the rest.  The section is read while the file loads, so its mistakes are
reported with the file's others, located at line:col; ``graph.meta["train"]`` then holds the
config, and :func:`from_graph` gives it to the trainer (or the defaults, for a graph that has
no ``train:`` section).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import DiagnosticList, GraphError, SourceLocation, did_you_mean
from ..graph import Graph
from ..optim import Schedule, optimizer_kinds, schedule_kinds
from .section_fields import SectionFields, item_loc
from .value_checks import is_finite

#: the optimizer, schedule and early stopping of a section that does not say (or says in part)
DEFAULT_OPTIMIZER = {"kind": "sgd", "lr": 0.01}
DEFAULT_SCHEDULE = {"kind": "constant"}
DEFAULT_EARLY_STOPPING = {"monitor": "val_loss", "patience": 5, "min_delta": 0.0, "mode": None,
                          "restore_best": True}

TRAIN_KEYS = ("minimize", "optimizer", "schedule", "clip_grad_norm", "epochs", "batch_size",
              "micro_batch", "seed", "validation_split", "test_split", "metrics", "logits", "inputs",
              "early_stopping", "bn_eval", "doc")
INPUT_ROLES = ("features", "labels")


@dataclass
class TrainConfig:
    """Training settings: the ``train:`` section, read and checked by the YAML front end.

    ``optimizer``, ``schedule`` and ``early_stopping`` are mappings of settings (what
    :func:`flowgrad.optim.make_optimizer` and ``make_schedule`` take); given in part, they are
    completed from the defaults above.
    """

    minimize: dict[str, float] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_OPTIMIZER))
    schedule: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SCHEDULE))
    clip_grad_norm: float | None = None
    epochs: int = 10
    batch_size: int = 32
    micro_batch: int | None = None
    seed: int = 0
    validation_split: float = 0.0
    test_split: float = 0.2
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])
    logits: str | None = None
    features: str | None = None
    labels: str | None = None
    early_stopping: dict[str, Any] | None = None
    #: batch norm normalises with its running statistics while training and leaves them as they
    #: are (the usual practice when fine-tuning a model trained by others); None: the trainer
    #: decides (on for an imported ONNX model, off otherwise: :class:`flowgrad.train.Trainer`)
    bn_eval: bool | None = None

    def __post_init__(self) -> None:
        self.optimizer = {**DEFAULT_OPTIMIZER, **self.optimizer}
        self.schedule = {**DEFAULT_SCHEDULE, **self.schedule}
        if self.early_stopping is not None:
            early = {**DEFAULT_EARLY_STOPPING, **self.early_stopping}
            if early["mode"] is None:   # accuracy-like monitors improve upwards
                early["mode"] = "max" if "accuracy" in str(early["monitor"]) else "min"
            self.early_stopping = early

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some settings changed; None values are ignored (flags not given), and
        ``lr`` changes the optimizer's learning rate."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "lr" in changes:
            changes["optimizer"] = {**changes.get("optimizer", self.optimizer),
                                    "lr": changes.pop("lr")}
        return dataclasses.replace(self, **changes)

    @property
    def lr(self) -> float:
        return float(self.optimizer["lr"])


def from_graph(graph: Graph, registry: Any = None) -> TrainConfig:
    """The graph's training config: its ``train:`` section as the front end read it, or, for
    a graph without one (an ONNX model, a YAML file without the section), the defaults
    completed from the graph.  A copy: changing it leaves the graph's untouched.

    ``registry`` is not needed any more — the front end checked the optimizer against the
    registry the graph was loaded with — and is accepted so that callers need no change.
    """
    del registry
    config = graph.meta.get("train")
    if isinstance(config, TrainConfig):
        return copy.deepcopy(config)
    errors = DiagnosticList()
    config = TrainConfig()
    complete_from_graph(config, graph, errors, None)
    errors.raise_if_any(GraphError)
    return config


def read_train_section(section: Any, graph: Graph, registry: Any, errors: DiagnosticList,
                       reported: Callable[[str], bool], loc: SourceLocation | None
                       ) -> TrainConfig:
    """The ``train:`` mapping as a :class:`TrainConfig`, every mistake added to ``errors``.

    ``graph`` is the graph as built (names resolve in it); ``reported(name)`` says whether a
    name was declared but failed with its own error, so it is not reported again here; ``loc``
    locates the section when it is not a mapping.
    """
    if section is None:          # `train:` and nothing under it: the defaults
        return TrainConfig()
    if not isinstance(section, dict):
        errors.add(f"'train' must be a mapping, got {section!r}", loc)
        return TrainConfig()
    return _TrainReader(SectionFields(section, "'train'", errors, loc), graph, registry,
                        reported).read()


class _TrainReader:
    def __init__(self, fields: SectionFields, graph: Graph, registry: Any,
                 reported: Callable[[str], bool]):
        self.fields = fields
        self.graph = graph
        self.registry = registry
        self.reported = reported

    def error(self, message: str, loc: SourceLocation | None) -> None:
        self.fields.error(message, loc)

    def read(self) -> TrainConfig:
        f, d = self.fields, self.fields.d
        f.only(TRAIN_KEYS)
        defaults = TrainConfig()
        values: dict[str, Any] = {
            "epochs": f.integer("epochs", 1, defaults.epochs),
            "batch_size": f.integer("batch_size", 1, defaults.batch_size),
            "seed": f.integer("seed", 0, defaults.seed),
            **{key: f.number(key, getattr(defaults, key), low=0.0, high=1.0,
                             what="a fraction in [0, 1)")
               for key in ("validation_split", "test_split")}}
        if d.get("micro_batch") is not None:
            values["micro_batch"] = f.integer("micro_batch", 1, None)
        if d.get("clip_grad_norm") is not None:
            values["clip_grad_norm"] = f.number("clip_grad_norm", None, low=0.0,
                                                what="a positive number")
        if "minimize" in d:
            values["minimize"] = self.minimize(d["minimize"], f.value_loc("minimize"))
        if "optimizer" in d:
            values["optimizer"] = self.optimizer(d["optimizer"], f.value_loc("optimizer"))
        if "schedule" in d:
            values["schedule"] = self.schedule(d["schedule"], f.value_loc("schedule"))
        if "metrics" in d:
            values["metrics"] = self.metrics(d["metrics"], f.value_loc("metrics"))
        if "logits" in d:
            values["logits"] = self.value_name(d["logits"], f.value_loc("logits"))
        if f.mapping("inputs", "{features: INPUT, labels: INPUT}") is not None:
            values.update(self.inputs(f.nested("inputs")))
        if "bn_eval" in d:
            if isinstance(d["bn_eval"], bool):
                values["bn_eval"] = d["bn_eval"]
            else:
                self.error(f"'bn_eval' must be true or false, got {d['bn_eval']!r}",
                           f.value_loc("bn_eval"))
        if f.mapping("early_stopping", "{monitor: val_loss, patience: 5}") is not None:
            values["early_stopping"] = self.early_stopping(f.nested("early_stopping"))
        return TrainConfig(**values)

    def value_name(self, name: Any, loc: SourceLocation | None) -> str | None:
        """``name`` if it names a value of the graph (``node`` or ``node.port``)."""
        if not isinstance(name, str):
            self.error(f"expected a node name, got {name!r}", loc)
            return None
        try:
            self.graph.resolve(name)
        except KeyError as e:
            if not self.reported(name):
                self.error(str(e.args[0]), loc)
            return None
        return name

    def minimize(self, value: Any, loc: SourceLocation | None) -> dict[str, float]:
        if isinstance(value, str):
            value = {value: 1.0}
        elif isinstance(value, list):
            value = {v: 1.0 for v in value} if all(isinstance(v, str) for v in value) else None
        if not isinstance(value, dict) or not value:
            self.error("'minimize' must name a scalar output, a list of them or a mapping "
                       "{output: weight}", loc)
            return {}
        key_locs = getattr(value, "key_locs", {})
        value_locs = getattr(value, "value_locs", {})
        out = {}
        for name, weight in value.items():
            if self.value_name(name, key_locs.get(name, loc)) is None:
                continue
            if not is_finite(weight):
                self.error(f"the weight of '{name}' must be a number, got {weight!r}",
                           value_locs.get(name, loc))
                continue
            out[name] = float(weight)
        return out

    def optimizer(self, value: Any, loc: SourceLocation | None) -> dict[str, Any]:
        """Settings checked against the optimizer kind's own ``defaults`` (plugins' too)."""
        if isinstance(value, str):
            value = {"kind": value}
        if not isinstance(value, dict):
            self.error("'optimizer' must be a mapping like {kind: sgd, lr: 0.1}", loc)
            return dict(DEFAULT_OPTIMIZER)
        f = SectionFields(value, "'optimizer'", self.fields.errors, loc)
        kinds = optimizer_kinds(self.registry)
        kind = value.get("kind", DEFAULT_OPTIMIZER["kind"])
        if not isinstance(kind, str) or kind not in kinds:
            self.error(f"unknown optimizer '{kind}'{did_you_mean(str(kind), kinds)} "
                       f"(optimizers: {', '.join(sorted(kinds))})", f.value_loc("kind"))
            return dict(DEFAULT_OPTIMIZER)
        defaults = kinds[kind].defaults
        allowed = ("kind", "lr", "weight_decay", *defaults)
        out = {"kind": kind}
        for key, setting in value.items():
            if key == "kind":
                continue
            if key not in allowed:
                self.error(f"optimizer '{kind}' has no setting '{key}'"
                           f"{did_you_mean(key, allowed)} (settings: {', '.join(allowed[1:])})",
                           f.key_loc(key))
                continue
            flag = isinstance(defaults.get(key, 0.0), bool)
            if isinstance(setting, bool) != flag or not flag and not is_finite(setting):
                self.error(f"optimizer setting '{key}' must be "
                           f"{'true or false' if flag else 'a number'}, got {setting!r}",
                           f.value_loc(key))
                continue
            out[key] = setting
        return out

    def schedule(self, value: Any, loc: SourceLocation | None) -> dict[str, Any]:
        """Settings checked against the schedule kind's ``defaults`` plus the warm-up keys
        every kind takes (plugins' kinds too)."""
        if isinstance(value, str):
            value = {"kind": value}
        if not isinstance(value, dict):
            self.error("'schedule' must be a mapping like {kind: cosine}", loc)
            return dict(DEFAULT_SCHEDULE)
        f = SectionFields(value, "'schedule'", self.fields.errors, loc)
        kinds = schedule_kinds(self.registry)
        kind = value.get("kind", DEFAULT_SCHEDULE["kind"])
        if not isinstance(kind, str) or kind not in kinds:
            self.error(f"unknown schedule '{kind}'{did_you_mean(str(kind), kinds)} "
                       f"(schedules: {', '.join(sorted(kinds))})", f.value_loc("kind"))
            return dict(DEFAULT_SCHEDULE)
        allowed = (*Schedule.WARMUP, *kinds[kind].defaults)
        out = {"kind": kind}
        for key, setting in value.items():
            if key == "kind":
                continue
            if key not in allowed:
                self.error(f"schedule '{kind}' has no setting '{key}'"
                           f"{did_you_mean(key, allowed)} (settings: {', '.join(allowed)})",
                           f.key_loc(key))
            elif not is_finite(setting):
                self.error(f"schedule setting '{key}' must be a number, got {setting!r}",
                           f.value_loc(key))
            else:
                out[key] = setting
        return out

    def metrics(self, value: Any, loc: SourceLocation | None) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
            self.error("'metrics' must be a list of names ('accuracy' or scalar outputs)", loc)
            return TrainConfig().metrics
        for i, name in enumerate(value):
            where = item_loc(value, i, loc)
            if name == "loss":
                self.error("'loss' is always reported (the weighted sum of what 'minimize' "
                           "names); list other outputs as metrics", where)
            elif name != "accuracy" and name not in self.graph.dag and not self.reported(name):
                self.error(f"unknown metric '{name}': use 'accuracy' or the name of a scalar "
                           f"node{did_you_mean(name, self.graph.dag.nodes)}", where)
        return list(value)

    def inputs(self, f: SectionFields) -> dict[str, str]:
        """``{role: input}`` for the roles the mapping names correctly."""
        f.only(INPUT_ROLES)
        graph_inputs = self.graph.inputs
        out = {}
        for role in INPUT_ROLES:
            if role not in f.d:
                continue
            name = f.d[role]
            if name in graph_inputs:
                out[role] = name
            elif not (isinstance(name, str) and self.reported(name)):
                self.error(f"'{name}' is not an input of the graph"
                           f"{did_you_mean(str(name), graph_inputs)} (inputs: "
                           f"{', '.join(graph_inputs)})", f.value_loc(role))
        return out

    def early_stopping(self, f: SectionFields) -> dict[str, Any]:
        f.only(tuple(DEFAULT_EARLY_STOPPING))
        out = {key: f.d[key] for key in DEFAULT_EARLY_STOPPING if key in f.d}
        if "mode" in out and out["mode"] not in ("min", "max"):
            self.error(f"'mode' must be min or max, got {out.pop('mode')!r}",
                       f.value_loc("mode"))
        if "monitor" in out:
            out["monitor"] = f.string("monitor", DEFAULT_EARLY_STOPPING["monitor"])
        if "patience" in out:
            out["patience"] = f.integer("patience", 1, DEFAULT_EARLY_STOPPING["patience"])
        if "min_delta" in out:
            out["min_delta"] = f.number("min_delta", DEFAULT_EARLY_STOPPING["min_delta"],
                                        low=0.0, high=float("inf"), what="a number >= 0")
        if "restore_best" in out and not isinstance(out["restore_best"], bool):
            self.error(f"'restore_best' must be true or false, got {out['restore_best']!r}",
                       f.value_loc("restore_best"))
            del out["restore_best"]
        return out


def complete_from_graph(config: TrainConfig, graph: Graph, errors: DiagnosticList,
                        loc: SourceLocation | None) -> None:
    """Fill what the section left out and the graph implies: minimize the ``loss`` node, the
    only float input takes the features, the only integer input the labels, the first 2-d
    output holds the class scores.  A choice the graph cannot make is an error at ``loc``."""
    if not config.minimize:
        if "loss" in graph.dag:
            config.minimize = {"loss": 1.0}
        else:
            errors.add("the graph has no node named 'loss'; say what to minimize with "
                       "'train: minimize: NODE'", loc)
    floats = [n for n in graph.inputs if graph.spec_of(n).dtype.kind == "f"]
    ints = [n for n in graph.inputs if graph.spec_of(n).dtype.kind in "iu"]
    if config.features is None:
        if len(floats) == 1:
            config.features = floats[0]
        else:
            errors.add(f"cannot tell which input takes the features (float inputs: "
                       f"{', '.join(floats) or 'none'}); set 'train: inputs: {{features: ...}}'",
                       loc)
    if config.labels is None and len(ints) == 1:
        config.labels = ints[0]
    if config.logits is None and "accuracy" in config.metrics:
        two_d = [o for o in graph.outputs if _output_ndim(graph, o) == 2]
        if two_d:
            config.logits = two_d[0]
        else:
            errors.add("metric 'accuracy' needs the class scores: name them with "
                       "'train: logits: OUTPUT'", loc)


def _output_ndim(graph: Graph, ref: str) -> int | None:
    node, port = graph.resolve(ref)
    specs = graph.specs(node)
    return None if specs is None else specs[port].ndim
