"""The YAML ``train:`` section, checked like the rest of a graph file (errors point at line:col).

    train:
      minimize: loss                 # a scalar output, a list of them, or {output: weight}
      optimizer: {kind: sgd, lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 1e-4}
      schedule: {kind: cosine, warmup_epochs: 1}     # constant | step | cosine (+ warm-up)
      clip_grad_norm: 5.0            # global-norm clipping (omit or null: none)
      epochs: 30
      batch_size: 32
      seed: 0                        # shuffling, splits
      validation_split: 0.1          # held out of the training data for val_* metrics
      test_split: 0.2                # held out by `flowgrad train` before anything else
      metrics: [accuracy]            # accuracy of `logits` against the labels, or scalar outputs
      logits: logits                 # the output whose argmax is the predicted class
      inputs: {features: x, labels: label}          # which graph input takes what
      early_stopping: {monitor: val_loss, patience: 5, min_delta: 0.0, restore_best: true}

Every key is optional; defaults are the dataclass defaults below.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import DiagnosticList, GraphError, SourceLocation, did_you_mean, unknown_key
from .graph import Graph
from .optim import SCHEDULES

TRAIN_KEYS = ("minimize", "optimizer", "schedule", "clip_grad_norm", "epochs", "batch_size",
              "seed", "validation_split", "test_split", "metrics", "logits", "inputs",
              "early_stopping", "doc")
SCHEDULE_KEYS = ("kind", "warmup_steps", "warmup_epochs", "step_epochs", "gamma", "min_lr")
EARLY_KEYS = ("monitor", "patience", "min_delta", "mode", "restore_best")


@dataclass
class TrainConfig:
    """Training settings; :func:`from_graph` reads them from the YAML ``train:`` section."""

    minimize: dict[str, float] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=lambda: {"kind": "sgd", "lr": 0.01})
    schedule: dict[str, Any] = field(default_factory=lambda: {"kind": "constant"})
    clip_grad_norm: float | None = None
    epochs: int = 10
    batch_size: int = 32
    seed: int = 0
    validation_split: float = 0.0
    test_split: float = 0.2
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])
    logits: str | None = None
    features: str | None = None
    labels: str | None = None
    early_stopping: dict[str, Any] | None = None

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some settings changed (None values are ignored: CLI flags not given)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def lr(self) -> float:
        return float(self.optimizer.get("lr", 0.01))


def from_graph(graph: Graph, registry: Any = None) -> TrainConfig:
    """The graph's ``train:`` section as a :class:`TrainConfig`, defaults filled in from the
    graph (the loss node, the logits output, the feature and label inputs); ``registry``
    supplies plugin optimizers (default: the process-wide registry)."""
    section = graph.meta.get("train")
    errors = DiagnosticList()
    config = TrainConfig()
    if section is not None:
        _Reader(section, errors, graph, registry).read(config)
    _fill_defaults(config, graph, errors, getattr(section, "loc", None))
    errors.raise_if_any(GraphError)
    return config


class _Reader:
    def __init__(self, section: Any, errors: DiagnosticList, graph: Graph, registry: Any):
        self.registry = registry
        self.d = section
        self.errors = errors
        self.graph = graph

    def loc(self, key: str | None = None, d: Any = None) -> SourceLocation | None:
        d = self.d if d is None else d
        if key is not None and hasattr(d, "value_locs") and key in d.value_locs:
            return d.value_locs[key]
        return getattr(d, "loc", None)

    def unknown_keys(self, d: Any, section: str, allowed: tuple[str, ...],
                     fallback: SourceLocation | None = None) -> None:
        """Report every key of mapping ``d`` not in ``allowed``, at the key."""
        for key in d:
            if key not in allowed:
                self.errors.add(unknown_key(key, section, allowed),
                                getattr(d, "key_locs", {}).get(key, fallback))

    def read(self, config: TrainConfig) -> None:
        d = self.d
        if not isinstance(d, dict):
            self.errors.add(f"'train' must be a mapping, got {type(d).__name__}", self.loc())
            return
        self.unknown_keys(d, "'train'", TRAIN_KEYS)
        for key, kind, low in (("epochs", int, 1), ("batch_size", int, 1), ("seed", int, 0)):
            if key in d:
                value = d[key]
                if isinstance(value, bool) or not isinstance(value, kind) or value < low:
                    self.errors.add(f"'{key}' must be an integer >= {low}, got {value!r}",
                                    self.loc(key))
                else:
                    setattr(config, key, value)
        for key in ("validation_split", "test_split"):
            if key in d:
                value = d[key]
                if not _number(value) or not 0 <= value < 1:
                    self.errors.add(f"'{key}' must be a fraction in [0, 1), got {value!r}",
                                    self.loc(key))
                else:
                    setattr(config, key, float(value))
        if d.get("clip_grad_norm") is not None:
            value = d["clip_grad_norm"]
            if not _number(value) or value <= 0:
                self.errors.add(f"'clip_grad_norm' must be a positive number, got {value!r}",
                                self.loc("clip_grad_norm"))
            else:
                config.clip_grad_norm = float(value)
        if "minimize" in d:
            config.minimize = self.minimize(d["minimize"])
        if "optimizer" in d:
            config.optimizer = self.optimizer(d["optimizer"])
        if "schedule" in d:
            config.schedule = self.schedule(d["schedule"])
        if "metrics" in d:
            metrics = d["metrics"]
            if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
                self.errors.add("'metrics' must be a list of names ('accuracy' or scalar "
                                "outputs)", self.loc("metrics"))
            else:
                for i, m in enumerate(metrics):
                    if m == "loss":
                        self.errors.add("'loss' is always reported (the weighted sum of what "
                                        "'minimize' names); list other outputs as metrics",
                                        _item_loc(metrics, i))
                    elif m != "accuracy" and m not in self.graph.dag:
                        self.errors.add(f"unknown metric '{m}': use 'accuracy' or the name of "
                                        f"a scalar node{did_you_mean(m, self.graph.dag.nodes)}",
                                        _item_loc(metrics, i))
                config.metrics = list(metrics)
        if "logits" in d:
            config.logits = self.value_name(d["logits"], self.loc("logits"))
        if "inputs" in d:
            self.inputs(d["inputs"], config)
        if d.get("early_stopping") is not None:
            config.early_stopping = self.early(d["early_stopping"])

    def value_name(self, name: Any, loc) -> str | None:
        if not isinstance(name, str):
            self.errors.add(f"expected a node name, got {name!r}", loc)
            return None
        try:
            self.graph.resolve(name)
        except KeyError as e:
            self.errors.add(str(e.args[0]), loc)
            return None
        return name

    def minimize(self, value: Any) -> dict[str, float]:
        loc = self.loc("minimize")
        if isinstance(value, str):
            value = {value: 1.0}
        elif isinstance(value, list):
            value = {v: 1.0 for v in value} if all(isinstance(v, str) for v in value) else None
        if not isinstance(value, dict) or not value:
            self.errors.add("'minimize' must name a scalar output, a list of them or a mapping "
                            "{output: weight}", loc)
            return {}
        out = {}
        for name, weight in value.items():
            where = self.loc(name, value) if hasattr(value, "value_locs") else loc
            if self.value_name(name, getattr(value, "key_locs", {}).get(name, loc)) is None:
                continue
            if not _number(weight):
                self.errors.add(f"the weight of '{name}' must be a number, got {weight!r}", where)
                continue
            out[name] = float(weight)
        return out

    def optimizer(self, value: Any) -> dict[str, Any]:
        loc = self.loc("optimizer")
        if isinstance(value, str):
            value = {"kind": value}
        if not isinstance(value, dict):
            self.errors.add("'optimizer' must be a mapping like {kind: sgd, lr: 0.1}", loc)
            return TrainConfig().optimizer
        from .optim import optimizer_kinds
        kinds = optimizer_kinds(self.registry)
        kind = value.get("kind", "sgd")
        if kind not in kinds:
            self.errors.add(f"unknown optimizer '{kind}'{did_you_mean(str(kind), kinds)} "
                            f"(optimizers: {', '.join(sorted(kinds))})", self.loc("kind", value))
            return dict(value)
        allowed = ("kind", "lr", "weight_decay", *kinds[kind].defaults)
        for key, setting in value.items():
            where = self.loc(key, value)
            if key not in allowed:
                self.errors.add(f"optimizer '{kind}' has no setting '{key}'"
                                f"{did_you_mean(key, allowed)} (settings: "
                                f"{', '.join(allowed[1:])})",
                                getattr(value, "key_locs", {}).get(key, where))
            elif key != "kind":
                default = kinds[kind].defaults.get(key, 0.0)
                if isinstance(default, bool) != isinstance(setting, bool) or \
                        not isinstance(setting, bool) and not _number(setting):
                    self.errors.add(f"optimizer setting '{key}' must be "
                                    f"{'true or false' if isinstance(default, bool) else 'a number'}"
                                    f", got {setting!r}", where)
        return {"kind": kind, **{k: v for k, v in value.items() if k != "kind"}}

    def schedule(self, value: Any) -> dict[str, Any]:
        if isinstance(value, str):
            value = {"kind": value}
        if not isinstance(value, dict):
            self.errors.add("'schedule' must be a mapping like {kind: cosine}",
                            self.loc("schedule"))
            return {"kind": "constant"}
        self.unknown_keys(value, "'schedule'", SCHEDULE_KEYS)
        for key, setting in value.items():
            if key not in SCHEDULE_KEYS:
                continue
            if key == "kind" and setting not in SCHEDULES:
                self.errors.add(f"unknown schedule '{setting}'"
                                f"{did_you_mean(str(setting), SCHEDULES)} (schedules: "
                                f"{', '.join(SCHEDULES)})", self.loc(key, value))
            elif key != "kind" and not _number(setting):
                self.errors.add(f"schedule setting '{key}' must be a number, got {setting!r}",
                                self.loc(key, value))
        return {"kind": "constant", **value}

    def inputs(self, value: Any, config: TrainConfig) -> None:
        if not isinstance(value, dict):
            self.errors.add("'inputs' must be a mapping {features: INPUT, labels: INPUT}",
                            self.loc("inputs"))
            return
        graph_inputs = self.graph.inputs
        self.unknown_keys(value, "'inputs'", ("features", "labels"), self.loc(None, value))
        for key, name in value.items():
            where = self.loc(key, value)
            if key not in ("features", "labels"):
                continue
            if name not in graph_inputs:
                self.errors.add(f"'{name}' is not an input of the graph"
                                f"{did_you_mean(str(name), graph_inputs)} (inputs: "
                                f"{', '.join(graph_inputs)})", where)
            else:
                setattr(config, key, name)

    def early(self, value: Any) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.errors.add("'early_stopping' must be a mapping like {monitor: val_loss, "
                            "patience: 5}", self.loc("early_stopping"))
            return None
        out = {"monitor": "val_loss", "patience": 5, "min_delta": 0.0, "mode": None,
               "restore_best": True}
        self.unknown_keys(value, "'early_stopping'", EARLY_KEYS)
        for key, setting in value.items():
            if key not in EARLY_KEYS:
                continue
            if key == "mode" and setting not in ("min", "max"):
                self.errors.add(f"'mode' must be min or max, got {setting!r}",
                                self.loc(key, value))
            else:
                out[key] = setting
        if out["mode"] is None:
            out["mode"] = "max" if "accuracy" in str(out["monitor"]) else "min"
        return out


def _fill_defaults(config: TrainConfig, graph: Graph, errors: DiagnosticList, loc) -> None:
    if not config.minimize:
        if "loss" in graph.dag:
            config.minimize = {"loss": 1.0}
        else:
            errors.add("the graph has no node named 'loss'; say what to minimize with "
                       "'train: minimize: NODE'", loc)
    floats = [n for n in graph.inputs if graph.node(n)["spec"].dtype.kind == "f"]
    ints = [n for n in graph.inputs if graph.node(n)["spec"].dtype.kind in "iu"]
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
        two_d = [o for o in graph.outputs
                 if (graph.specs(graph.resolve(o)[0]) or [None])[graph.resolve(o)[1]] is not None
                 and graph.specs(graph.resolve(o)[0])[graph.resolve(o)[1]].ndim == 2]
        if two_d:
            config.logits = two_d[0]
        else:
            errors.add("metric 'accuracy' needs the class scores: name them with "
                       "'train: logits: OUTPUT'", loc)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _item_loc(items: Any, i: int):
    locs = getattr(items, "item_locs", None)
    return locs[i] if locs else getattr(items, "loc", None)
