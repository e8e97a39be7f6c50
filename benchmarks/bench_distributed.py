"""flowgrad.distributed on this machine: 1 and 2 Dask workers against one process.

    .venv/bin/python benchmarks/bench_distributed.py [--steps 12] [--only training]

1. Data-parallel training, the same global batch on 1 and 2 workers (a ``LocalCluster`` of
   1-thread processes) and in one process: the digits CNN (``graphs/digits_cnn.yaml``, 8x8
   digits, batch 64) and ResNet-14 (``graphs/resnet14.yaml``, synthetic CIFAR-sized 3x32x32
   data, batch 32).  Per step: the driver's wall time, the slowest shard's compute time, the
   rest (communication, reduction, scheduling), the slowest shard's CPU seconds (what the
   compute costs when every worker has a core to itself — the figure that survives a loaded
   machine), and per worker the bytes sent (its gradient
   contribution plus the shard's indices) and received (the summed gradients).  The first
   steps (replica start, first-run checks) are not counted; figures are medians.
2. A whole-layer render: every channel of the digits CNN's ``conv1`` (16 channels).
3. Batch inference: ResNet-14 over a memory-mapped ``.npy`` of CIFAR-sized rows.
4. The latency of one empty Dask task (submit to result), the fixed cost per round of messages.

Everything runs at 1 BLAS thread per process (``--threads``, as the other benchmarks), so a
worker is a core.  The speed-up is (1 worker) / (2 workers).  Prints a table and ``VALUE:``
lines; docs/distributed.md builds its scaling estimate from these figures.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _timing import set_threads  # noqa: E402

THREADS = set_threads()

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import flowgrad  # noqa: E402
import flowgrad.distributed as fd  # noqa: E402
from flowgrad import Dataset, Trainer, compile, load, load_data  # noqa: E402
from flowgrad.train_config import from_graph  # noqa: E402
from flowgrad.visualize import render_layer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARMUP = 3


def graph_path(name: str) -> str:
    return os.path.join(ROOT, "graphs", name)


def training_data(name: str, batch: int, steps: int) -> Dataset:
    rows = batch * (steps + WARMUP)
    if name == "digits_cnn":
        digits = load_data("digits")
        index = np.arange(rows) % len(digits)
        return Dataset(digits.x[index], digits.y[index], "digits")
    rng = np.random.default_rng(0)
    return Dataset(rng.normal(size=(rows, 3, 32, 32)).astype(np.float32),
                   rng.integers(0, 10, rows), "synthetic CIFAR")


def trainer_for(name: str, batch: int, cls=Trainer, **kwargs):
    graph = load(graph_path(name + ".yaml"))
    config = from_graph(graph).replace(epochs=1, batch_size=batch, validation_split=0.0,
                                       optimizer={"kind": "sgd", "lr": 0.01, "momentum": 0.9},
                                       schedule={"kind": "constant"})
    return cls(compile(graph, seed=config.seed), config, **kwargs)


def time_local_training(name: str, batch: int, steps: int) -> float:
    """Median seconds of a one-process step (the same steps the workers run)."""
    trainer = trainer_for(name, batch)
    data = training_data(name, batch, steps)
    times = []
    trainer.callbacks.append(lambda t: times.append(time.perf_counter()))
    start = time.perf_counter()
    trainer.fit(data)
    edges = [start] + times
    return statistics.median(b - a for a, b in zip(edges[WARMUP:], edges[WARMUP + 1:]))


def time_distributed_training(client, name: str, batch: int, steps: int, send: str) -> dict:
    trainer = trainer_for(name, batch, fd.DistributedTrainer, client=client, send=send)
    trainer.fit(training_data(name, batch, steps))
    trainer.close()
    stats = trainer.stats[WARMUP:]
    return {"seconds": statistics.median(s.seconds for s in stats),
            "compute": statistics.median(s.compute for s in stats),
            "cpu": statistics.median(s.cpu for s in stats),
            "comm": statistics.median(s.communication for s in stats),
            "sent": stats[0].sent, "received": stats[0].received,
            "workers": stats[0].workers}


def time_render(client, out: str, steps: int) -> float:
    plan = compile(load(graph_path("digits_cnn.yaml")))
    start = time.perf_counter()
    if client is None:
        render_layer(plan, "conv1", batch=4, out=out, steps=steps, seed=0)
    else:
        fd.render_layer_distributed(plan, "conv1", batch=4, out=out, client=client,
                                    steps=steps, seed=0)
    return time.perf_counter() - start


def time_inference(client, data: str, out: str, chunk: int) -> float:
    start = time.perf_counter()
    if client is None:
        plan = compile(load(graph_path("resnet14.yaml"))).freeze()
        x = np.load(data, mmap_mode="r")
        y = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(len(x), 10))
        for i in range(0, len(x), chunk):
            y[i:i + chunk] = plan.forward({"x": np.asarray(x[i:i + chunk])},
                                          outputs=["logits"], grad=False)["logits"]
        y.flush()
    else:
        fd.run_distributed(graph_path("resnet14.yaml"), data, out, client=client,
                           chunk_rows=chunk)
    return time.perf_counter() - start


def task_latency(client, repeat: int = 30) -> float:
    client.submit(int, 0, pure=False).result()
    start = time.perf_counter()
    for i in range(repeat):
        client.submit(int, i, pure=False).result()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per run")
    parser.add_argument("--render-steps", type=int, default=48)
    parser.add_argument("--rows", type=int, default=2048, help="inference rows")
    parser.add_argument("--only", choices=("training", "render", "inference"))
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    args = parser.parse_args()
    print(f"flowgrad {flowgrad.__version__}, {os.cpu_count()} cores, {THREADS} thread(s) per "
          f"process, load average {os.getloadavg()[0]:.1f}")
    models = [("digits_cnn", 64), ("resnet14", 32)]
    tmp = tempfile.mkdtemp(prefix="bench_distributed_")
    rows = args.rows
    data = os.path.join(tmp, "cifar.npy")
    np.save(data, np.random.default_rng(1).normal(size=(rows, 3, 32, 32)).astype(np.float32))
    results: dict = {}
    if args.only in (None, "training"):
        for name, batch in models:
            results[("local", name)] = time_local_training(name, batch, args.steps)
    if args.only in (None, "render"):
        results[("local", "render")] = time_render(None, os.path.join(tmp, "r0.png"),
                                                   args.render_steps)
    if args.only in (None, "inference"):
        results[("local", "inference")] = time_inference(None, data,
                                                         os.path.join(tmp, "y0.npy"), 256)
    for workers in (1, 2):
        with fd.connect(workers=workers) as client:
            results[(workers, "latency")] = task_latency(client)
            if args.only in (None, "training"):
                for name, batch in models:
                    for send in ("indices", "shards"):
                        results[(workers, name, send)] = time_distributed_training(
                            client, name, batch, args.steps, send)
            if args.only in (None, "render"):
                # the first render warms the workers (imports, compiled kernels)
                time_render(client, os.path.join(tmp, f"warm{workers}.png"), 1)
                results[(workers, "render")] = time_render(
                    client, os.path.join(tmp, f"r{workers}.png"), args.render_steps)
            if args.only in (None, "inference"):
                time_inference(client, data, os.path.join(tmp, f"warm{workers}.npy"), 256)
                results[(workers, "inference")] = time_inference(
                    client, data, os.path.join(tmp, f"y{workers}.npy"), 256)
    report(results, models, rows)


def report(results: dict, models, rows: int) -> None:
    print(f"\nempty task round trip: 1 worker {results[(1, 'latency')] * 1e3:.1f} ms, "
          f"2 workers {results[(2, 'latency')] * 1e3:.1f} ms")
    for name, batch in models:
        if ("local", name) not in results:
            continue
        local = results[("local", name)]
        print(f"\n{name}, global batch {batch}: one process {local * 1e3:.1f} ms/step")
        print("  workers  send     ms/step  compute  other   cpu  sent/worker  received  "
              "speed-up  cpu speed-up")
        for send in ("indices", "shards"):
            one = results[(1, name, send)]
            for workers in (1, 2):
                r = results[(workers, name, send)]
                print(f"  {workers:7d}  {send:7s}  {r['seconds'] * 1e3:7.1f}  "
                      f"{r['compute'] * 1e3:7.1f}  {r['comm'] * 1e3:6.1f}  "
                      f"{r['cpu'] * 1e3:5.1f}  {r['sent'] / 1e3:8.1f} kB  "
                      f"{r['received'] / 1e3:6.1f} kB  {one['seconds'] / r['seconds']:6.2f}x  "
                      f"{one['cpu'] / r['cpu']:6.2f}x")
                print(f"VALUE: distributed {name} {send} {workers} workers ms/step | "
                      f"{r['seconds'] * 1e3:.1f}")
    for what, label in (("render", "render of conv1 (16 channels)"),
                        ("inference", f"ResNet-14 inference, {rows} rows")):
        if ("local", what) in results:
            one, two = results[(1, what)], results[(2, what)]
            print(f"\n{label}: one process {results[('local', what)]:.2f} s, 1 worker "
                  f"{one:.2f} s, 2 workers {two:.2f} s, speed-up {one / two:.2f}x")
            print(f"VALUE: distributed {what} speed-up 2 workers | {one / two:.2f}")


if __name__ == "__main__":
    main()
