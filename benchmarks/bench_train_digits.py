"""Training the digits networks: flowgrad vs PyTorch (CPU) on the same data, schedule and split.

    .venv/bin/python benchmarks/bench_train_digits.py [--threads N] [--repeats 5]

For each graph (digits_mlp, digits_cnn) both frameworks train the same architecture with the
graph's ``train:`` settings (Adam, weight decay, cosine schedule with warm-up, batch size,
epochs) on the fixed 80/20 split, shuffled by the same seeded permutation.  The two contenders
take turns (``_timing.interleaved``: one whole training run of each per round, the order
rotating, a short pause between turns) and the ratio is the median of the per-round ratios
flowgrad / torch.  Each run starts from the same initial weights (reloaded into the model built
once; flowgrad's compiled programs and PyTorch's modules are warm, as for a user's second run),
so what is timed is ``Trainer.fit`` against the equivalent PyTorch loop.  Printed: medians, the
ratio, and both test accuracies.  Also times the ten-logit visualization of the MLP (flowgrad
only).

Both get the same thread count: ``--threads N`` (default 1, 0 = all cores), set before numpy and
torch load; the header prints what each reports.  Without PyTorch only flowgrad's times print.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _timing import (emit_value, import_torch, interleaved, median_time,  # noqa: E402
                     report, set_threads, thread_header)

THREADS = set_threads()

import argparse  # noqa: E402
import copy  # noqa: E402
import pathlib  # noqa: E402

import numpy as np  # noqa: E402

import flowgrad  # noqa: E402
from flowgrad.data import batches, load_data, split  # noqa: E402
from flowgrad.optim import make_schedule  # noqa: E402
from flowgrad.train import Trainer  # noqa: E402
from flowgrad.train_config import from_graph  # noqa: E402
from flowgrad.visualize import visualize  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
torch = import_torch(THREADS)


def flowgrad_run(name, train, test):
    """A function training a fresh Trainer from the graph's initial weights; ``result`` keeps
    the last run's test accuracy and trainer."""
    plan = flowgrad.compile(flowgrad.load(str(ROOT / "graphs" / f"{name}.yaml")))
    initial = plan.state_dict()
    result = {}

    def run():
        plan.load_state_dict(initial)
        trainer = Trainer(plan)
        trainer.fit(train)
        result["trainer"] = trainer
        result["accuracy"] = trainer.evaluate(test)["accuracy"]
    return run, result


def torch_model(name):
    nn = torch.nn
    if name == "digits_mlp":
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                             nn.Linear(32, 10)), (64,)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(256, 10)), (1, 8, 8)


def torch_run(name, config, train, test):
    """The same training in PyTorch: a function running it from the same initial weights each
    call (its own seed, the same shuffling permutations as flowgrad's trainer)."""
    torch.manual_seed(0)
    model, shape = torch_model(name)
    initial = copy.deepcopy(model.state_dict())
    steps = -(-len(train) // config.batch_size)
    x = torch.tensor(train.x.reshape((-1,) + shape))
    y = torch.tensor(train.y)
    x_test = torch.tensor(test.x.reshape((-1,) + shape))
    loss_fn = torch.nn.CrossEntropyLoss()
    result = {}

    def run():
        model.load_state_dict(initial)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr,
                               weight_decay=config.optimizer.get("weight_decay", 0.0))
        sched = dict(config.schedule)
        schedule = make_schedule(config.lr, config.epochs * steps, steps,
                                 kind=sched.pop("kind"), **sched)
        rng = np.random.default_rng(config.seed)
        step = 0
        for _ in range(config.epochs):
            for index in batches(len(train), config.batch_size, rng):
                for group in opt.param_groups:
                    group["lr"] = schedule(step)
                index = torch.from_numpy(index)
                opt.zero_grad()
                loss_fn(model(x[index]), y[index]).backward()
                opt.step()
                step += 1
        with torch.no_grad():
            pred = model(x_test).argmax(1).numpy()
        result["accuracy"] = float(np.mean(pred == test.y))
    return run, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds (runs of each contender)")
    args = parser.parse_args()
    print("bench_train_digits: " + thread_header(THREADS))
    train, test = split(load_data("digits"), 0.2, seed=0)
    print(f"digits: {len(train)} train / {len(test)} test; {args.repeats} rounds, contenders "
          "interleaved, one warm-up run each")
    for name in ("digits_mlp", "digits_cnn"):
        fg, fg_result = flowgrad_run(name, train, test)
        fns = {f"flowgrad {name} training": fg}
        results = {"flowgrad": fg_result}
        if torch is not None:
            config = from_graph(flowgrad.load(str(ROOT / "graphs" / f"{name}.yaml")))
            th, th_result = torch_run(name, config, train, test)
            fns[f"pytorch {name} training"] = th
            results["pytorch"] = th_result
        samples = interleaved(fns, repeat=args.repeats, warmup=1, wake=False)
        config = fg_result["trainer"].config
        print(f"{name}: {config.epochs} epochs, batch {config.batch_size}, whole run")
        report(samples, f"pytorch {name} training" if torch is not None else None)
        print("  test accuracy: " + ", ".join(f"{k} {r['accuracy']:.4f}"
                                               for k, r in results.items()))
        if name == "digits_mlp":
            plan = fg_result["trainer"].plan

            def vis():
                visualize(plan, [f"logits[{k}]" for k in range(10)], steps=300,
                          penalties={"l2": 30.0, "tv": 30.0})
            t = median_time(vis, repeat=args.repeats, warmup=1)
            print(f"  visualize 10 logits x 300 steps (flowgrad only): {t:.2f} s")
            emit_value("flowgrad digits_mlp visualize 10 logits x 300 steps", t, "s")


if __name__ == "__main__":
    main()
