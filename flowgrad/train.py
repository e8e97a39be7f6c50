"""The trainer: mini-batches, epochs, metrics, early stopping, checkpoints and clean Ctrl-C.

One step is a forward and backward with the losses seeded (split into micro-batches whose
gradients are accumulated, if asked: :func:`forward_backward`), a finiteness check, optional
global-norm clipping and an optimizer update of the trainable params.  Everything random is
drawn from generators whose states are checkpointed (the shuffler here, the plan's ``rng`` for
dropout), and a checkpoint records the position inside the epoch, so resuming — even from a
Ctrl-C in the middle of an epoch — repeats exactly the computation an uninterrupted run does.

Ctrl-C during :meth:`Trainer.fit` finishes the current step (an update is never half-applied),
writes the checkpoint and raises :class:`TrainingInterrupted`; a second Ctrl-C aborts at once.
"""
from __future__ import annotations

import contextlib
import copy
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import networkx as nx
import numpy as np

from .checkpoint import check_training_state, load_checkpoint, save_checkpoint
from .data import Dataset, batches, bind_inputs, fit_to_input, split
from .errors import FlowgradError
from .graph import Graph
from .op import Spec
from .numerics import check_step
from .optim import Optimizer, clip_by_global_norm, make_optimizer, make_schedule
from .plan import Plan
from .train_config import TrainConfig, from_graph


#: resuming with another number of epochs compares the schedules over the steps taken, up to
#: this many (a schedule that depends on the run's length shows it long before)
SCHEDULE_CHECK = 100_000


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after a checkpoint was written to ``path`` (None: no path)."""

    def __init__(self, path: str | None):
        super().__init__(path)
        self.path = path


@dataclass
class History:
    """One row per epoch: ``epoch``, ``loss``, metrics, ``val_*`` metrics, ``lr``, ``seconds``."""

    rows: list[dict[str, float]] = field(default_factory=list)

    def __getitem__(self, key: str) -> list[float]:
        return [row[key] for row in self.rows if key in row]

    def __len__(self) -> int:
        return len(self.rows)

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.rows, f, indent=1)


def _terminal() -> bool:
    """Whether progress bars reach a person (tqdm draws on stderr)."""
    return sys.stderr.isatty()


def epoch_summary(row: dict[str, float]) -> str:
    """``loss 0.1234, accuracy 0.9700, val_loss ...``: an epoch's row as one log line."""
    return ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                     if k not in ("epoch", "seconds", "lr"))


class Trainer:
    """Trains a compiled plan's trainable params as its graph's ``train:`` section says.

    ``config`` defaults to the graph's ``train:`` section; ``registry`` supplies plugin
    optimizers; ``progress`` shows a tqdm bar per epoch (loss and samples/s); ``callbacks``
    are called as ``callback(trainer)`` after every step; ``micro_batch`` bounds the samples
    run at once, a larger batch being split and its gradients accumulated (one update);
    ``log`` receives the lines about resuming (``print`` to show them).

    ``bn_eval`` keeps batch norm in evaluation mode while training: it normalises with its
    running statistics and leaves them unchanged, while dropout still drops (the usual practice
    when fine-tuning a model trained by others: its statistics come from far more data than a
    fine-tuning batch, and a small batch's statistics make training and evaluation disagree —
    training loss falls while evaluation loss rises).  None (the default) takes the config's
    ``bn_eval``, and if that is unset too, turns it on for an imported ONNX model and off for
    other graphs (a YAML network trained from scratch needs batch statistics).
    """

    def __init__(self, plan: Plan, config: TrainConfig | None = None, registry: Any = None,
                 progress: bool = False, callbacks: Sequence[Callable[["Trainer"], Any]] = (),
                 micro_batch: int | None = None, log: Callable[[str], Any] | None = None,
                 bn_eval: bool | None = None):
        if plan.dtype.itemsize < 4:
            raise FlowgradError(
                f"{plan.graph.source or plan.graph.name}: cannot train in {plan.dtype}: its "
                "11-bit mantissa loses the optimizer's small updates and overflows the loss's "
                "sums (NaN within a few steps); compile with dtype='float32' (or float64) to "
                "train, and cast the trained params afterwards")
        self.plan = plan
        self.config = config = config or from_graph(plan.graph, registry)
        self.registry = registry
        graph = plan.graph
        leaves = {n: plan.params[n] for n in plan.trainable}
        settings = {k: v for k, v in config.optimizer.items() if k != "kind"}
        self.optimizer: Optimizer = make_optimizer(
            config.optimizer.get("kind", "sgd"), leaves, registry=registry,
            lr_mult={n: graph.lr_mult(n) for n in leaves},
            decay_mult={n: graph.decay_mult(n) for n in leaves}, **settings)
        self.progress = progress
        self.micro_batch = micro_batch if micro_batch is not None else config.micro_batch
        fixed = fixed_batch(graph)
        if fixed is not None and self.micro_batch is None:
            self.micro_batch = fixed        # a model that takes one batch size is fed that
        if bn_eval is None:
            bn_eval = config.bn_eval if config.bn_eval is not None else "onnx" in graph.meta
        self.bn_eval = bool(bn_eval)
        self._norms = [graph.op_of(n) for n in graph.ops if graph.op_of(n).type == "batch_norm"]
        self.callbacks = list(callbacks)
        self.seeds = dict(config.minimize)
        metric_outputs = [m for m in config.metrics if m != "accuracy"]
        wanted = list(self.seeds) + metric_outputs
        if "accuracy" in config.metrics and config.logits:
            wanted.append(config.logits)
        self.outputs = tuple(dict.fromkeys(wanted))
        self.log = log or (lambda line: None)
        self._bound: dict[int, tuple[Dataset, dict[str, np.ndarray]]] = {}
        # what a checkpoint records of the run, to tell a resumed run whether it continues it
        self.run_settings = {"epochs": config.epochs, "batch_size": config.batch_size,
                             "samples": 0}
        self.rng = np.random.default_rng(config.seed)
        self.epoch = 0                 # completed epochs
        self.step = 0                  # completed optimizer steps
        self.batch_in_epoch = 0        # completed steps of the current epoch
        self.epoch_rng_state: dict | None = None
        self.sums: dict[str, float] = {}
        self.history = History()
        self.best: float | None = None
        self.bad_epochs = 0
        self.best_params: dict[str, np.ndarray] | None = None
        self.stopped = False
        self._interrupt = False

    # -- data ------------------------------------------------------------------------------
    def feeds(self, data: Dataset, index: np.ndarray | slice) -> dict[str, np.ndarray]:
        """The graph inputs for the samples at ``index``."""
        return {name: array[index] for name, array in self.bind(data).items()}

    def bind(self, data: Dataset) -> dict[str, np.ndarray]:
        """The array of ``data`` feeding each input the outputs need
        (:func:`flowgrad.data.bind_inputs`: checked once per data set, then cached)."""
        cached = self._bound.get(id(data))
        if cached is not None and cached[0] is data:
            return cached[1]
        graph, cfg = self.plan.graph, self.config
        nodes = {graph.resolve(o)[0] for o in self.outputs}
        above = set(nodes).union(*(nx.ancestors(graph.dag, n) for n in nodes))
        needed = [n for n in graph.inputs if n in above]
        binding = bind_inputs(graph, data, needed, cfg.features, cfg.labels, self._classes())
        if len(self._bound) >= 4:               # train, validation, test: keep the recent few
            self._bound.pop(next(iter(self._bound)))
        self._bound[id(data)] = (data, binding)
        return binding

    def _classes(self) -> int | None:
        """How many classes integer labels index: the logits' width, when the logits are
        (N, C) and the labels (N,)."""
        cfg, graph = self.config, self.plan.graph
        if cfg.logits is None or cfg.labels is None:
            return None
        logits = _spec(graph, cfg.logits)
        if logits.ndim == 2 and graph.spec_of(cfg.labels).ndim == 1 \
                and isinstance(logits.shape[1], int):
            return logits.shape[1]
        return None

    # -- one step --------------------------------------------------------------------------
    @contextlib.contextmanager
    def norm_mode(self):
        """Within: batch norm uses its running statistics if ``bn_eval`` (for a training
        forward/backward; a data-parallel worker's step uses it too); each op's own setting
        is back afterwards."""
        frozen = self._norms if self.bn_eval else []
        for op in frozen:
            op.use_running_stats = True
        try:
            yield
        finally:
            for op in frozen:
                op.use_running_stats = op.config().get("use_running_stats", False)

    def train_step(self, feeds: dict[str, np.ndarray], lr: float) -> dict[str, np.ndarray]:
        """One forward/backward/update on a batch; returns the requested outputs."""
        plan = self.plan
        plan.train()
        with self.norm_mode():
            out, grads = forward_backward(plan, feeds, self.seeds, outputs=self.outputs,
                                          micro_batch=self.micro_batch)
        check_step(plan, feeds, {k: out[k] for k in self.seeds}, grads,
                   where=f"epoch {self.epoch + 1}, step {self.step + 1}")
        if self.config.clip_grad_norm is not None:
            grads, _ = clip_by_global_norm(grads, self.config.clip_grad_norm)
        self.optimizer.step(grads, lr=lr)
        return out

    def _accumulate(self, sums: dict[str, float], out: dict, feeds: dict, n: int) -> None:
        cfg = self.config
        sums["n"] = sums.get("n", 0) + n
        loss = sum(w * float(out[k]) for k, w in self.seeds.items())
        sums["loss"] = sums.get("loss", 0.0) + loss * n
        for m in cfg.metrics:
            if m == "accuracy":
                if cfg.logits is None or cfg.labels is None:
                    continue
                pred = np.argmax(out[cfg.logits], axis=-1)
                sums["accuracy"] = sums.get("accuracy", 0.0) + float(
                    np.sum(pred == feeds[cfg.labels]))
            else:
                sums[m] = sums.get(m, 0.0) + float(np.mean(out[m])) * n

    @staticmethod
    def _means(sums: dict[str, float], prefix: str = "") -> dict[str, float]:
        n = max(sums.get("n", 0), 1)
        return {prefix + k: v / n for k, v in sums.items() if k != "n"}

    # -- evaluation ------------------------------------------------------------------------
    def evaluate(self, data: Dataset, batch_size: int = 512) -> dict[str, float]:
        """Loss and metrics over ``data`` in eval mode (no gradients, no state updates)."""
        plan = self.plan
        mode = plan.training
        plan.eval()
        batch_size = fixed_batch(plan.graph) or batch_size
        sums: dict[str, float] = {}
        try:
            for index in batches(len(data), batch_size, None):
                feeds = self.feeds(data, index)
                out = plan.forward(feeds, outputs=self.outputs, grad=False)
                self._accumulate(sums, out, feeds, len(index))
        finally:
            plan.train(mode)
        return self._means(sums)

    def predict(self, x: np.ndarray, output: str | None = None, batch_size: int = 512
                ) -> np.ndarray:
        """The ``output`` (default: the logits) for features ``x``, in eval mode."""
        output = output or self.config.logits or self.plan.graph.outputs[0]
        batch_size = fixed_batch(self.plan.graph) or batch_size
        data = Dataset(x, None)
        mode = self.plan.training
        self.plan.eval()
        try:
            parts = [self.plan.forward({self.config.features: fit_to_input(
                x[i], self.plan.graph.spec_of(self.config.features), self.config.features)},
                outputs=[output], grad=False)[output] for i in batches(len(data), batch_size, None)]
        finally:
            self.plan.train(mode)
        return np.concatenate(parts)

    # -- the loop --------------------------------------------------------------------------
    def fit(self, train: Dataset, val: Dataset | None = None, epochs: int | None = None,
            checkpoint: str | None = None, resume: str | None = None) -> History:
        """Train for ``epochs`` (total, counting epochs done before a resume).

        ``val`` defaults to ``validation_split`` of ``train`` held out (seeded).  With
        ``checkpoint``, the state is saved there after every epoch and on Ctrl-C; ``resume``
        loads a checkpoint first.
        """
        cfg = self.config
        epochs = cfg.epochs if epochs is None else epochs
        if val is None and cfg.validation_split > 0:
            train, val = split(train, cfg.validation_split, seed=cfg.seed)
        if not len(train):
            raise FlowgradError(f"{train.name}: no samples left to train on (after the test "
                                "and validation splits); give more data")
        self.bind(train)
        if val is not None:
            self.bind(val)
        steps_per_epoch = -(-len(train) // cfg.batch_size)
        schedule = self._schedule(epochs, steps_per_epoch)
        if resume is not None:
            self.load(resume)
            self._resuming(resume, epochs, len(train), schedule)
        self.run_settings = {"epochs": epochs, "batch_size": cfg.batch_size,
                             "samples": len(train)}
        restore = self._install_interrupt_handler()
        try:
            while self.epoch < epochs and not self.stopped:
                self._run_epoch(train, val, epochs, schedule, checkpoint)
                if checkpoint is not None:
                    self.save(checkpoint)
        finally:
            restore()
        early = cfg.early_stopping
        if early and early.get("restore_best") and self.best_params is not None:
            self.plan.load_state_dict(self.best_params)
        return self.history

    def _schedule(self, epochs: int, steps_per_epoch: int):
        sched = dict(self.config.schedule)
        return make_schedule(self.config.lr, epochs * steps_per_epoch, steps_per_epoch,
                             kind=sched.pop("kind", "constant"), registry=self.registry, **sched)

    def _resuming(self, path: str, epochs: int, samples: int, schedule) -> None:
        """Say where training resumes, and whether the result is what an uninterrupted run of
        ``epochs`` epochs gives; refuse to continue inside an epoch of other data."""
        was, batch = self.run_settings, self.config.batch_size
        steps_per_epoch = -(-samples // batch)
        same_data = (was["samples"], was["batch_size"]) == (samples, batch)
        if self.batch_in_epoch and same_data and self.batch_in_epoch >= steps_per_epoch:
            raise FlowgradError(f"{path}: metadata 'batch_in_epoch' is {self.batch_in_epoch}, "
                                f"past the {steps_per_epoch} batches of an epoch: the "
                                "checkpoint is damaged")
        if self.batch_in_epoch and not same_data:
            raise FlowgradError(
                f"{path}: the checkpoint stopped inside epoch {self.epoch + 1} (after batch "
                f"{self.batch_in_epoch}) of a run on {was['samples']} samples in batches of "
                f"{was['batch_size']}; this run has {samples} in batches of {batch}: resume "
                "with the same data and batch size")
        where = (f", batch {self.batch_in_epoch} of {steps_per_epoch} of epoch {self.epoch + 1}"
                 if self.batch_in_epoch else "")
        self.log(f"resuming from epoch {self.epoch} of {epochs}{where} ({path}, step "
                 f"{self.step})")
        if self.stopped or self.epoch >= epochs:
            self.log("nothing to train: the checkpoint's run "
                     + ("stopped early" if self.stopped else f"has done {self.epoch} epochs"))
        elif not same_data:
            self.log(f"note: the checkpoint's run had {was['samples']} samples in batches of "
                     f"{was['batch_size']}, this one {samples} in batches of {batch}: it "
                     "continues, but not as one uninterrupted run would")
        elif was["epochs"] != epochs:
            before = self._schedule(was["epochs"], steps_per_epoch)
            if all(before(s) == schedule(s) for s in range(min(self.step, SCHEDULE_CHECK))):
                self.log(f"continuing to {epochs} epochs (the checkpoint's run was for "
                         f"{was['epochs']}): exactly an uninterrupted {epochs}-epoch run, as "
                         "the schedule does not depend on the run's length")
            else:
                self.log(f"note: the '{self.config.schedule['kind']}' schedule depends on the "
                         f"run's length: steps 1-{self.step} followed it for "
                         f"{was['epochs']} epochs, the rest follow it for {epochs}, so this "
                         f"is not bit-identical to an uninterrupted {epochs}-epoch run")

    def _run_epoch(self, train: Dataset, val: Dataset | None, epochs: int, schedule, checkpoint):
        cfg = self.config
        if self.batch_in_epoch == 0:
            self.epoch_rng_state = copy.deepcopy(self.rng.bit_generator.state)
            self.sums = {}
        else:  # resuming inside an epoch: regenerate its order from the saved state
            self.rng.bit_generator.state = copy.deepcopy(self.epoch_rng_state)
        order = list(batches(len(train), cfg.batch_size, self.rng))
        bar = self._bar(len(train), epochs)
        start = time.perf_counter()
        lr = schedule(self.step)
        try:
            if bar is not None:
                bar.update(sum(len(i) for i in order[:self.batch_in_epoch]))
            for index in order[self.batch_in_epoch:]:
                feeds = self.feeds(train, index)
                lr = schedule(self.step)
                out = self.train_step(feeds, lr)
                self._accumulate(self.sums, out, feeds, len(index))
                self.step += 1
                self.batch_in_epoch += 1
                if bar is not None:
                    bar.update(len(index))
                    bar.set_postfix(loss=f"{self.sums['loss'] / self.sums['n']:.4f}",
                                    refresh=False)
                for callback in self.callbacks:
                    callback(self)
                if self._interrupt:
                    if checkpoint is not None:
                        self.save(checkpoint)
                    raise TrainingInterrupted(checkpoint)
        finally:
            if bar is not None:
                bar.close()
        row = {"epoch": self.epoch + 1, **self._means(self.sums), "lr": lr}
        if val is not None and len(val):
            row.update({f"val_{k}": v for k, v in self.evaluate(val).items()})
        row["seconds"] = time.perf_counter() - start
        self.history.rows.append(row)
        if bar is None or bar.disable:     # no bar on a terminal: one line per epoch instead
            self.log(f"epoch {row['epoch']}/{epochs}: " + epoch_summary(row))
        self.epoch += 1
        self.batch_in_epoch = 0
        self.sums = {}
        self._early_stopping(row)

    def _early_stopping(self, row: dict[str, float]) -> None:
        early = self.config.early_stopping
        if not early:
            return
        monitor = early["monitor"]
        if monitor not in row:
            raise FlowgradError(f"early stopping monitors '{monitor}', which training does not "
                                f"report (reported: {', '.join(row)}); set validation_split "
                                "for val_* metrics")
        value = row[monitor]
        sign = 1.0 if early["mode"] == "min" else -1.0
        if self.best is None or sign * (value - self.best) < -float(early["min_delta"]):
            self.best = value
            self.bad_epochs = 0
            if early.get("restore_best"):
                self.best_params = self.plan.state_dict()
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= int(early["patience"]):
                self.stopped = True

    def run_metrics(self) -> dict[str, float]:
        """Facts about the run itself for ``metrics.json`` beside the scores (none here; the
        data-parallel trainer adds its worker count)."""
        return {}

    @property
    def epoch_lines(self) -> bool:
        """Whether :meth:`fit` logs a line per epoch: when no progress bar is drawn on a
        terminal (a bar clears itself; a log file or pipe would show nothing)."""
        return not (self.progress and _terminal())

    def _bar(self, total: int, epochs: int):
        if not self.progress:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=total, unit="img", unit_scale=True, leave=False,
                    desc=f"epoch {self.epoch + 1}/{epochs}", dynamic_ncols=True,
                    disable=not _terminal())

    def _install_interrupt_handler(self) -> Callable[[], None]:
        """First Ctrl-C: finish the step, checkpoint, stop.  Second: stop at once."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            if self._interrupt:
                raise KeyboardInterrupt
            self._interrupt = True

        signal.signal(signal.SIGINT, handler)
        self._interrupt = False
        return lambda: signal.signal(signal.SIGINT, previous)

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write params, optimizer state, counters, RNG states and history atomically."""
        arrays = {"params": self.plan.state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.best_params is not None:
            arrays["best"] = self.best_params
        meta = {
            "graph": self.plan.graph.name, "dtype": self.plan.dtype.name,
            "epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
            "sums": self.sums, "history": self.history.rows,
            "rng": self.rng.bit_generator.state, "epoch_rng": self.epoch_rng_state,
            "plan_rng": self.plan.rng.bit_generator.state,
            "early": {"best": self.best, "bad_epochs": self.bad_epochs, "stopped": self.stopped},
            "optimizer_kind": self.optimizer.kind, **self.run_settings,
        }
        save_checkpoint(path, arrays, meta)

    def load(self, path: str) -> None:
        """Restore everything :meth:`save` wrote, after checking all of it
        (:func:`flowgrad.checkpoint.check_training_state`): the graph must have the same
        params, of the same dtype."""
        ckpt = load_checkpoint(path)
        check_training_state(ckpt, self.plan.params, self.optimizer.leaves, path)
        meta = ckpt.meta
        if meta.get("optimizer_kind") != self.optimizer.kind:
            raise FlowgradError(f"{path}: the checkpoint was trained with optimizer "
                                f"'{meta.get('optimizer_kind')}', this run uses "
                                f"'{self.optimizer.kind}'")
        self.plan.load_state_dict(ckpt.params)
        self.optimizer.load_state_dict(ckpt.arrays.get("optimizer", {}))
        self.best_params = ckpt.arrays.get("best")
        self.epoch, self.step = meta["epoch"], meta["step"]
        self.batch_in_epoch = meta["batch_in_epoch"]
        self.sums = dict(meta["sums"])
        self.history = History(list(meta["history"]))
        self.rng.bit_generator.state = meta["rng"]
        self.epoch_rng_state = meta["epoch_rng"]
        self.plan.rng.bit_generator.state = meta["plan_rng"]
        early = meta["early"]
        self.best, self.bad_epochs, self.stopped = (early["best"], early["bad_epochs"],
                                                    early["stopped"])
        self.run_settings = {k: meta[k] for k in ("epochs", "batch_size", "samples")}


def forward_backward(plan: Plan, feeds: Mapping[str, Any], seeds: Mapping[str, Any],
                     wrt: Iterable[str] = (), outputs: Sequence[str] | None = None,
                     micro_batch: int | None = None, reduction: str = "mean"
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``plan.forward_backward``, the batch split into chunks of at most ``micro_batch``
    samples whose results are combined: what bounds memory for a large batch.

    Outputs with a batch axis are concatenated; scalar outputs (losses) and gradients are
    combined as ``reduction`` says: ``"mean"`` (the default, for losses that average over the
    batch: chunk i is weighted n_i / N) or ``"sum"``.  Returns ``(outputs, grads)``.
    """
    if reduction not in ("mean", "sum"):
        raise FlowgradError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    sizes = {np.shape(v)[0] for v in feeds.values() if np.ndim(v) > 0}
    if micro_batch is None or not sizes or max(sizes) <= micro_batch:
        return plan.forward_backward(feeds, seeds, wrt, outputs)
    if len(sizes) != 1:
        raise FlowgradError(f"micro-batching needs one batch size, inputs have {sorted(sizes)}")
    total = sizes.pop()
    outs: dict[str, list] = {}
    grads: dict[str, list] = {}
    for start in range(0, total, micro_batch):
        chunk = {k: (v[start:start + micro_batch] if np.ndim(v) > 0 else v)
                 for k, v in feeds.items()}
        weight = 1.0 if reduction == "sum" else min(micro_batch, total - start) / total
        out, grad = plan.forward_backward(chunk, seeds, wrt, outputs)
        for k, v in out.items():
            outs.setdefault(k, []).append((v, weight))
        for k, v in grad.items():
            grads.setdefault(k, []).append((v, weight))
    # A value with a batch axis is per sample: its chunks are concatenated (gradients of
    # batched inputs scaled by their chunk's weight).  Anything else (a loss, a param's
    # gradient) was reduced over the chunk: the chunks are combined by weight.
    graph = plan.graph
    merged = {k: (np.concatenate([v for v, _ in parts]) if _spec(graph, k).shape[:1] == (None,)
                  else _weighted_sum(parts)) for k, parts in outs.items()}
    combined = {k: (np.concatenate([v * w for v, w in parts]) if graph.is_input(k)
                    else _weighted_sum(parts)) for k, parts in grads.items()}
    return merged, combined


def fixed_batch(graph: Graph) -> int | None:
    """The one batch size ``graph`` takes, when its inputs fix it (an ONNX model whose own
    shape arithmetic depends on its declared batch: :mod:`flowgrad.onnx.batch`), else None."""
    sizes = {graph.spec_of(n).shape[0] for n in graph.inputs
             if graph.spec_of(n).ndim and graph.spec_of(n).shape[0] is not None}
    return sizes.pop() if len(sizes) == 1 else None


def _weighted_sum(parts: list[tuple[np.ndarray, float]]) -> np.ndarray:
    total = parts[0][0] * parts[0][1]
    for value, weight in parts[1:]:
        total = total + value * weight
    return np.asarray(total, dtype=parts[0][0].dtype)


def add_classification_loss(graph: Graph, logits: str | None = None, registry: Any = None,
                            labels: str = "label", loss: str = "loss") -> Graph:
    """A copy of ``graph`` with ``loss = softmax_cross_entropy(logits, labels)`` added.

    For graphs that only compute scores — typically imported from ONNX — so they can be
    trained as classifiers: ``labels`` becomes a new int64 input.  ``logits`` defaults to the
    only 2-d float output.  The loss always reads logits: if that output is a ``softmax`` of
    something (many exported classifiers end in one), the loss reads the softmax's input, since
    a cross-entropy on probabilities would be a second softmax (flat gradients, a loss that
    cannot fall below ~log C / C).  A ``log_softmax`` output is read as it is: log-softmax is
    idempotent, so the cross-entropy on log-probabilities is exactly their negative
    log-likelihood.  ``graph.meta["loss_on"]`` records what the loss reads and why.
    """
    from .passes import prepare
    from .plugins import default_registry
    candidates = [o for o in graph.outputs if _spec(graph, o).ndim == 2
                  and _spec(graph, o).dtype.kind == "f"]
    if logits is None:
        if len(candidates) != 1:
            raise FlowgradError(f"graph '{graph.name}' has no 'loss' node and no single 2-d "
                                "output to train as a classifier (outputs: "
                                f"{', '.join(graph.outputs)}); add a loss to the graph")
        logits = candidates[0]
    for name in (labels, loss):
        if name in graph.dag:
            raise FlowgradError(f"cannot add a classification loss: '{name}' already exists")
    out = graph.copy()
    registry = registry or default_registry()
    op = registry.get("softmax_cross_entropy")()
    node, port = out.resolve(logits)
    why = f"'{logits}'"
    made_by = node
    while out.is_op(made_by) and out.op_of(made_by).type in ("identity", "branch") \
            and out.input_sources(made_by)[0] is not None:
        made_by = out.input_sources(made_by)[0][0]    # an exporter's Identity before the output
    kind = out.op_of(made_by).type if out.is_op(made_by) else None
    if kind == "softmax" and _last_axis(out.op_of(made_by), _spec(graph, logits).ndim) \
            and out.input_sources(made_by)[0] is not None:
        node, port = out.input_sources(made_by)[0]
        why = (f"'{out.value_name(node, port)}', the logits that softmax '{logits}' turns into "
               "probabilities (a cross-entropy on probabilities would apply softmax twice)")
    elif kind == "log_softmax":
        why = (f"'{logits}', log-probabilities (softmax cross-entropy on them is their "
               "negative log-likelihood)")
    out.add_input(labels, Spec((None,), np.int64))
    out.add_op(loss, op)
    out.connect(node, port, loss, 0)
    out.connect(labels, 0, loss, 1)
    out.outputs = list(out.outputs) + [loss]
    out.meta["loss_on"] = why
    return prepare(out)


def _last_axis(op, ndim: int) -> bool:
    """Whether a softmax normalises the last axis (what the cross-entropy's classes are)."""
    axis = getattr(op, "axis", -1)
    return axis in (-1, ndim - 1)


def _spec(graph: Graph, ref: str) -> Spec:
    node, port = graph.resolve(ref)
    return graph.specs(node)[port]


def train(plan: Plan, data: Dataset, **kwargs: Any) -> History:
    """Shortcut: ``Trainer(plan).fit(data, **kwargs)``."""
    return Trainer(plan).fit(data, **kwargs)
