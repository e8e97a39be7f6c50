"""Training the digits networks: flowgrad vs PyTorch (CPU) on the same data, schedule and split.

    .venv/bin/python benchmarks/bench_train_digits.py [--repeats 3]

For each graph (digits_mlp, digits_cnn) both frameworks train the same architecture with the
graph's ``train:`` settings (Adam, weight decay, cosine schedule with warm-up, batch size,
epochs) on the fixed 80/20 split, shuffled by the same seeded permutation; printed: median
wall time, test accuracy, and the time ratio flowgrad / torch.  Also times the ten-logit
visualization of the MLP.
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import numpy as np

import flowgrad
from flowgrad.data import batches, load_data, split
from flowgrad.optim import make_schedule
from flowgrad.train import Trainer
from flowgrad.visualize import visualize

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_flowgrad(name, train, test):
    graph = flowgrad.load(str(ROOT / "graphs" / f"{name}.yaml"))
    trainer = Trainer(flowgrad.compile(graph))
    start = time.perf_counter()
    trainer.fit(train)
    seconds = time.perf_counter() - start
    return seconds, trainer.evaluate(test)["accuracy"], trainer


def torch_model(name):
    import torch.nn as nn
    if name == "digits_mlp":
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                             nn.Linear(32, 10)), (64,)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(256, 10)), (1, 8, 8)


def run_torch(name, config, train, test):
    import torch
    torch.manual_seed(0)
    model, shape = torch_model(name)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr,
                           weight_decay=config.optimizer.get("weight_decay", 0.0))
    steps = -(-len(train) // config.batch_size)
    sched = dict(config.schedule)
    schedule = make_schedule(config.lr, config.epochs * steps, steps,
                             kind=sched.pop("kind"), **sched)
    x = torch.tensor(train.x.reshape((-1,) + shape))
    y = torch.tensor(train.y)
    rng = np.random.default_rng(config.seed)
    loss_fn = torch.nn.CrossEntropyLoss()
    start = time.perf_counter()
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
    seconds = time.perf_counter() - start
    with torch.no_grad():
        pred = model(torch.tensor(test.x.reshape((-1,) + shape))).argmax(1).numpy()
    return seconds, float(np.mean(pred == test.y))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch
    torch.set_num_threads(1)          # tiny batches: threads only add synchronisation
    train, test = split(load_data("digits"), 0.2, seed=0)
    print(f"digits: {len(train)} train / {len(test)} test; median of {args.repeats} runs")
    for name in ("digits_mlp", "digits_cnn"):
        fg = [run_flowgrad(name, train, test) for _ in range(args.repeats)]
        config = fg[0][2].config
        th = [run_torch(name, config, train, test) for _ in range(args.repeats)]
        fg_t, th_t = statistics.median(r[0] for r in fg), statistics.median(r[0] for r in th)
        print(f"{name}: {config.epochs} epochs, batch {config.batch_size}")
        print(f"  flowgrad  {fg_t:6.2f} s  test accuracy {fg[0][1]:.4f}")
        print(f"  torch     {th_t:6.2f} s  test accuracy {th[0][1]:.4f}")
        print(f"  ratio flowgrad/torch time: {fg_t / th_t:.2f}")
        if name == "digits_mlp":
            plan = fg[0][2].plan
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                visualize(plan, [f"logits[{k}]" for k in range(10)], steps=300,
                          penalties={"l2": 30.0, "tv": 30.0})
                times.append(time.perf_counter() - start)
            print(f"  visualize 10 logits x 300 steps: {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
