"""Training a graph into a folder of results, and evaluating a checkpoint.

:func:`train_and_report` is ``flowgrad train``: the data split once into train and test
(``test_split`` of the ``train:`` section, seeded by its ``seed``: a fixed split), training on
the first part (less any validation split), the test part evaluated only at the end, and the
folder written: ``checkpoint.npz`` (after every epoch and on Ctrl-C), ``history.json``,
``curves.png`` and ``metrics.json``.  :func:`evaluate_checkpoint` is ``flowgrad eval``: the
same split, so it scores exactly the samples training held out.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .. import Plan, compile, load
from ..checkpoint import load_params
from ..data import Dataset, load_data, split
from ..errors import FlowgradError
from ..graph import Graph
from ..onnx.trainable import set_trainable
from ..plots import plot_curves
from ..train import History, Trainer, add_classification_loss, epoch_summary
from ..train_config import TrainConfig, from_graph

Log = Callable[[str], Any]
SPLITS = ("test", "train", "all")


def quiet(line: str) -> None:
    """The default ``log``: a script asks for results, not for the command's output."""


@dataclass
class TrainingRun:
    """What :func:`train_and_report` did: the trained plan and trainer, the config it used,
    the history, the test metrics (``test_*``, ``train_seconds``, ``epochs``) and the files."""

    plan: Plan
    trainer: Trainer
    config: TrainConfig
    history: History
    metrics: dict[str, float]
    checkpoint: str
    files: list[str] = field(default_factory=list)


@dataclass
class Evaluation:
    """What :func:`evaluate_checkpoint` measured: loss and metrics over ``samples`` samples."""

    graph: str
    data: str
    split: str
    samples: int
    metrics: dict[str, float]


def load_trainable(graph: Graph | str, registry: Any = None, log: Log = quiet, *,
                   freeze: Sequence[str] = (), unfreeze: Sequence[str] = (),
                   straight_through: bool = False) -> Graph:
    """The graph at a path (or a graph); one without a loss or ``train:`` section (e.g. an ONNX
    classifier) gets a softmax cross-entropy on its logits (never on a softmax output: see
    :func:`~flowgrad.train.add_classification_loss`) and a ``label`` input.

    ``freeze``/``unfreeze`` are glob patterns of param names (and ONNX names): matching params
    stop or start training, unfreeze winning (``freeze=["*"], unfreeze=["fc*"]`` trains the
    head only).  For an ONNX model given by path they are applied while importing, so
    ``unfreeze`` can also make a structural constant trainable (:mod:`flowgrad.onnx.trainable`).
    ``straight_through`` imports an ONNX model's QuantizeLinear nodes with the straight-through
    estimator, so a quantized model fine-tunes through its quantizers (:mod:`flowgrad.ops.quant`).
    """
    freeze, unfreeze = list(freeze or ()), list(unfreeze or ())
    if isinstance(graph, Graph):
        source = graph.source or graph.name
        patterns_done = False
    else:
        source = graph
        onnx = str(graph).lower().endswith(".onnx")
        options = {"freeze": freeze, "unfreeze": unfreeze,
                   "straight_through": straight_through} if onnx else {}
        graph = load(graph, registry=registry, **options)
        patterns_done = onnx
    if straight_through and not patterns_done:
        raise FlowgradError(f"{source}: straight-through quantization is an ONNX import option; "
                            "in a YAML graph set 'straight_through: true' on its "
                            "quantize_linear nodes")
    if (freeze or unfreeze) and not patterns_done:
        graph = graph.copy()
        set_trainable(graph, freeze, unfreeze)
    if freeze or unfreeze:
        trained = [p for p in graph.params if graph.is_trainable(p)]
        log(f"{len(trained)} of {len(graph.params)} params train"
            + (f": {', '.join(trained[:8])}" + (" ..." if len(trained) > 8 else "")
               if trained else ""))
    if "train" not in graph.meta and "loss" not in graph.dag:
        graph = add_classification_loss(graph, registry=registry)
        log(f"{source} has no loss: treating it as a classifier (softmax cross-entropy "
            f"on {graph.meta['loss_on']} against a new 'label' input)")
    return graph


def train_and_report(graph: Graph | str, out_dir: str, data: str = "digits", *,
                     resume: str | None = None, dtype: str = "float32", registry: Any = None,
                     progress: bool = False, log: Log = quiet,
                     freeze: Sequence[str] = (), unfreeze: Sequence[str] = (),
                     straight_through: bool = False, **settings: Any) -> TrainingRun:
    """Train ``graph`` as its ``train:`` section says, evaluate it on the held-out test split
    and write the results to ``out_dir``.

    ``data`` is ``"digits"`` or a .npz/.npy/.csv file; ``settings`` override the section
    (``epochs=``, ``batch_size=``, ``lr=``, ``seed=``, ``bn_eval=``, any :class:`TrainConfig`
    field; None leaves a setting as it is); ``freeze``/``unfreeze`` choose the params that train
    and ``straight_through`` lets an ONNX model's quantizers pass gradients
    (:func:`load_trainable`); ``resume`` continues from a checkpoint; ``log`` receives the
    progress lines the command prints.  Ctrl-C saves a checkpoint and raises
    :class:`~flowgrad.train.TrainingInterrupted`.
    """
    graph = load_trainable(graph, registry, log, freeze=freeze, unfreeze=unfreeze,
                           straight_through=straight_through)
    config = from_graph(graph, registry).replace(**settings)
    plan = compile(graph, dtype=dtype, seed=config.seed)
    trainer = Trainer(plan, config, registry=registry, progress=progress, log=log)
    notes = []
    if trainer.bn_eval and trainer._norms:
        notes.append("batch norm in evaluation mode (running statistics kept; --bn-train "
                     "to use batch statistics)")
    fixed = graph.meta.get("onnx", {}).get("fixed_batch")
    if fixed:
        notes.append(f"batch fixed at {fixed['batch']} ({fixed['reason']}): run "
                     f"{fixed['batch']} sample(s) at a time, gradients accumulated")
    for note in notes:
        log(note)
    train, test = split(load_data(data, registry), config.test_split, seed=config.seed)
    log(f"training {graph.name} on {data}: {len(train)} train / {len(test)} test samples, "
        f"{config.epochs} epochs, batch {config.batch_size}, "
        f"{config.optimizer['kind']} lr {config.lr:g}")
    return fit_and_report(trainer, train, test, out_dir, resume=resume, log=log)


def fit_and_report(trainer: Trainer, train: Dataset, test: Dataset, out_dir: str, *,
                   resume: str | None = None, log: Log = quiet) -> TrainingRun:
    """Fit ``trainer`` on ``train`` with a checkpoint in ``out_dir``, score ``test`` and write
    the results folder: the part of :func:`train_and_report` every trainer shares (the
    data-parallel one of :mod:`flowgrad.distributed` too)."""
    os.makedirs(out_dir, exist_ok=True)
    checkpoint = os.path.join(out_dir, "checkpoint.npz")
    start = time.perf_counter()
    history = trainer.fit(train, checkpoint=checkpoint, resume=resume)
    seconds = time.perf_counter() - start
    history_path = os.path.join(out_dir, "history.json")
    history.save(history_path)
    name = trainer.plan.graph.name
    curves = plot_curves(history.rows, os.path.join(out_dir, "curves.png"), title=name)
    last = history.rows[-1] if history.rows else {}
    if not trainer.epoch_lines:          # the bar cleared itself: say where training ended
        log(f"epoch {last.get('epoch', 0)}: " + epoch_summary(last))
    metrics = {"train_seconds": seconds, "epochs": trainer.epoch, **trainer.run_metrics()}
    if len(test):
        metrics.update({f"test_{k}": v for k, v in trainer.evaluate(test).items()})
        log("test: " + ", ".join(f"{k[5:]} {v:.4f}" for k, v in metrics.items()
                                 if k.startswith("test_")))
    metrics_path = os.path.join(out_dir, "metrics.json")
    with open(metrics_path, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=1)
    log(f"trained in {seconds:.1f} s; wrote {checkpoint}, {curves}, {history_path}")
    return TrainingRun(trainer.plan, trainer, trainer.config, history, metrics, checkpoint,
                       [checkpoint, history_path, curves, metrics_path])


def evaluate_checkpoint(graph: Graph | str, checkpoint: str, data: str = "digits",
                        split_name: str = "test", *, seed: int | None = None,
                        dtype: str = "float32", registry: Any = None,
                        log: Log = quiet) -> Evaluation:
    """Loss and metrics of the params in ``checkpoint`` on ``split_name`` of ``data``:
    ``test`` (what :func:`train_and_report` held out, with the section's ``seed`` unless
    ``seed`` is given), ``train`` or ``all``."""
    if split_name not in SPLITS:
        raise FlowgradError(f"unknown split '{split_name}' (splits: {', '.join(SPLITS)})")
    graph = load_trainable(graph, registry, log)
    config = from_graph(graph, registry).replace(seed=seed)
    plan = compile(graph, dtype=dtype)
    load_params(plan, checkpoint)
    plan.freeze()                   # evaluation only: what is derived from the params is kept
    samples: Dataset = load_data(data, registry)
    if split_name != "all":
        train, test = split(samples, config.test_split, seed=config.seed)
        samples = test if split_name == "test" else train
    metrics = Trainer(plan, config, registry=registry).evaluate(samples)
    return Evaluation(graph.name, data, split_name, len(samples), metrics)
