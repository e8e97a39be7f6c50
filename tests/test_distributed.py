"""flowgrad.distributed on a LocalCluster: data-parallel training equal to one process,
surviving a killed worker; layer renders and batch inference equal to local runs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import flowgrad
from flowgrad import Dataset, Trainer, compile, load, load_data
from flowgrad.errors import FlowgradError
from flowgrad.train_config import from_graph
from flowgrad.visualize import render_channels, render_layer

distributed = pytest.importorskip("distributed")    # in the dev extra: never skipped in CI
import flowgrad.distributed as fd                   # noqa: E402
from flowgrad.distributed.shipping import GraphSource, worker_registry  # noqa: E402

from .conftest import LAYER_OPTIONS, SIX_CHANNEL_CONV as CONV  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLP = os.path.join(ROOT, "graphs", "digits_mlp.yaml")
CNN = os.path.join(ROOT, "graphs", "digits_cnn.yaml")


@pytest.fixture(scope="module")
def client():
    with fd.connect(workers=2) as c:
        yield c


@pytest.fixture(scope="module")
def digits():
    data = load_data("digits")
    return Dataset(data.x[:200], data.y[:200], "digits200")


SGD = {"kind": "sgd", "lr": 0.05, "momentum": 0.9}   # Adam would magnify rounding of ~0 grads


def _fit(trainer_class, data, dtype="float32", epochs=1, optimizer=None, **kwargs):
    graph = load(MLP)
    config = from_graph(graph).replace(epochs=epochs, validation_split=0.0, optimizer=optimizer)
    plan = compile(graph, dtype=dtype, seed=config.seed)
    trainer = trainer_class(plan, config, **kwargs)
    trainer.fit(data)
    return trainer


def test_importing_flowgrad_does_not_import_dask():
    code = "import sys, flowgrad; sys.exit(any(m in sys.modules for m in ('dask', 'distributed')))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_without_dask_the_error_says_what_to_install():
    code = ("import sys; sys.modules['distributed'] = None\n"
            "try:\n    import flowgrad.distributed\nexcept Exception as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "pip install 'flowgrad[distributed]'" in out


def test_two_workers_match_one_process_bit_for_bit_in_float64(client, digits):
    """Two shards summed in a fixed order are micro-batching's two chunks: the same bits."""
    spread = _fit(fd.DistributedTrainer, digits, "float64", client=client, workers=2)
    local = _fit(Trainer, digits, "float64", micro_batch=16)      # batch_size 32 / 2 workers
    assert {s.workers for s in spread.stats} == {1, 2}     # 200 % 32: a last batch of 8
    for name, value in local.plan.params.items():
        np.testing.assert_array_equal(spread.plan.params[name], value, err_msg=name)
    assert spread.history.rows[0]["loss"] == local.history.rows[0]["loss"]
    # the replicas hold the driver's parameters too
    replica = client.submit(lambda run: fd.training.worker_cache()[("replica", run)]
                            .plan.state_dict(), spread.run_id, workers=[spread.replicas[1]],
                            pure=False).result()
    for name, value in replica.items():
        np.testing.assert_array_equal(value, spread.plan.params[name])
    spread.close()


def test_two_workers_match_an_unsplit_batch_to_float32_rounding(client, digits):
    spread = _fit(fd.DistributedTrainer, digits, client=client, workers=2, send="shards",
                  optimizer=SGD)
    local = _fit(Trainer, digits, optimizer=SGD)
    for name, value in local.plan.params.items():
        np.testing.assert_allclose(spread.plan.params[name], value, rtol=1e-4, atol=1e-5)
    assert spread.history.rows[0]["accuracy"] == pytest.approx(local.history.rows[0]["accuracy"])
    assert all(s.sent > 0 and s.received > 0 and s.seconds >= s.compute for s in spread.stats)
    spread.close()


def test_train_writes_the_local_files_and_resumes_bit_for_bit(client, digits, tmp_path):
    data = str(tmp_path / "digits.npz")
    np.savez(data, x=digits.x[:120], y=digits.y[:120])
    settings = dict(data=data, client=client, workers=2, validation_split=0.1,
                    batch_size=32, progress=True)
    whole = fd.train(MLP, str(tmp_path / "whole"), epochs=2, **settings)
    assert sorted(os.listdir(tmp_path / "whole")) == ["checkpoint.npz", "curves.png",
                                                      "history.json", "metrics.json"]
    assert whole.metrics["workers"] == 2 and "test_accuracy" in whole.metrics
    fd.train(MLP, str(tmp_path / "half"), epochs=1, **settings)
    resumed = fd.train(MLP, str(tmp_path / "rest"), epochs=2,
                       resume=str(tmp_path / "half" / "checkpoint.npz"), **settings)
    for name, value in whole.plan.params.items():
        np.testing.assert_array_equal(resumed.plan.params[name], value, err_msg=name)
    def timeless(rows):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]
    assert timeless(resumed.history.rows) == timeless(whole.history.rows)


def test_a_plugin_missing_on_a_worker_is_named(client):
    source = GraphSource("yaml", "", "/graphs/g.yaml", ("/nowhere/my_op.py",), ("fancy_ops",))
    with pytest.raises(FlowgradError, match=r"/nowhere/my_op\.py, fancy_ops \(installed"):
        client.submit(worker_registry, source, pure=False).result()


def test_plugin_graphs_run_on_workers(client, tmp_path):
    registry = flowgrad.make_registry(paths=[os.path.join(ROOT, "plugins")])
    graph = os.path.join(ROOT, "graphs", "plugins_demo.yaml")
    x = np.random.default_rng(0).normal(size=(40, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run = fd.run_distributed(graph, str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
                             client=client, input="x", registry=registry, chunk_rows=16)
    expected = compile(load(graph, registry=registry)).eval().forward(
        {"x": x}, outputs=["logits"], grad=False)["logits"]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-6, atol=1e-6)
    assert run.chunks == 3


def test_batch_inference_streams_chunks_into_the_output(client, tmp_path):
    x = np.random.default_rng(1).normal(size=(1000, 64)).astype(np.float32)
    np.save(tmp_path / "big.npy", x)
    progress = []
    run = fd.run_distributed(MLP, str(tmp_path / "big.npy"), str(tmp_path / "out.npy"),
                             client=client, chunk_rows=128,
                             on_chunk=lambda done, total: progress.append(done))
    assert (run.chunks, run.rows, run.output, run.workers) == (8, 1000, "logits", 2)
    assert sorted(progress) == progress and progress[-1] == 1000 and len(progress) == 8
    out = np.load(tmp_path / "out.npy")
    plan = compile(load(MLP)).eval()
    chunked = np.concatenate([plan.forward({"x": x[i:i + 128]}, outputs=["logits"],
                                           grad=False)["logits"] for i in range(0, 1000, 128)])
    np.testing.assert_array_equal(out, chunked)
    np.testing.assert_allclose(out, plan.forward({"x": x}, outputs=["logits"],
                                                 grad=False)["logits"], rtol=1e-5, atol=1e-5)
    # a graph in memory with other weights than its file: the workers use the graph's
    graph = load(MLP)
    graph.set_value("b3", np.arange(10, dtype=np.float32))
    fd.run_distributed(graph, str(tmp_path / "big.npy"), str(tmp_path / "b3.npy"),
                       client=client, chunk_rows=500)
    expected = compile(graph).eval().forward({"x": x}, outputs=["logits"], grad=False)
    np.testing.assert_allclose(np.load(tmp_path / "b3.npy"), expected["logits"], rtol=1e-5,
                               atol=1e-5)       # workers run 1 BLAS thread, this process may not


def test_layer_render_equals_the_local_one_and_resumes(client, tmp_path):
    path = tmp_path / "conv.yaml"
    path.write_text(CONV)
    plan = compile(load(str(path)), dtype="float64")
    local = render_layer(plan, "conv", batch=2, out=str(tmp_path / "a" / "grid.png"),
                         **LAYER_OPTIONS)
    out = str(tmp_path / "b" / "grid.png")
    os.makedirs(os.path.dirname(out))

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):       # a local render stopped after channels 0, 1
        render_layer(plan, "conv", batch=2, out=out, on_batch=stop, **LAYER_OPTIONS)
    progress = []
    spread = fd.render_layer_distributed(plan, "conv", batch=2, out=out, client=client,
                                         on_batch=lambda done, total: progress.append(
                                             (done, total)), **LAYER_OPTIONS)
    assert spread.resumed == 2 and progress == [(4, 6), (6, 6)]
    np.testing.assert_array_equal(spread.views, local.views)
    with open(out, "rb") as f, open(local.files[0], "rb") as g:
        assert f.read() == g.read()
    again = fd.render_layer_distributed(plan, "conv", batch=2, out=out, client=client,
                                        **LAYER_OPTIONS)
    assert again.resumed == 6
    with pytest.raises(FlowgradError, match="other settings"):
        fd.render_layer_distributed(plan, "conv", batch=2, out=out, client=client,
                                    **dict(LAYER_OPTIONS, steps=4))
    # other weights, same graph: the workers render with the new params, not cached ones
    plan.load_state_dict({"K": plan.params["K"] * -2})
    other = fd.render_layer_distributed(plan, "conv", [0, 1], batch=2, client=client,
                                        out=str(tmp_path / "c" / "grid.png"), **LAYER_OPTIONS)
    expected = render_channels(plan, "conv", [0, 1], batch=2, **LAYER_OPTIONS)
    np.testing.assert_array_equal(other.views, [expected[0].view, expected[1].view])


def test_the_checkpoint_entry_point_renders_a_layer(client, tmp_path):
    run = fd.render_layer_checkpoint(os.path.join(ROOT, "graphs", "digits_cnn.yaml"), "conv1",
                                     str(tmp_path / "conv1.png"), client=client,
                                     channels=[0, 5, 9], batch=2, steps=2)
    assert run.render.channels == [0, 5, 9] and run.random
    assert all(os.path.exists(f) for f in run.files)


def test_the_commands_run_on_a_cluster_by_address(client, tmp_path, capsys):
    """`flowgrad train --cluster ADDR`, `run --data ... --cluster ADDR` and `visualize --layer
    ... --cluster ADDR`, as a user types them against a running scheduler."""
    from flowgrad import cli
    address = client.scheduler.address
    runs = tmp_path / "r"
    assert cli.main(["train", MLP, "--out", str(runs), "--epochs", "1", "--batch-size", "256",
                     "--cluster", address]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "with 2 Dask worker(s)" in out and (runs / "checkpoint.npz").exists()
    x = load_data("digits").x[:300].astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert cli.main(["run", MLP, "--checkpoint", str(runs / "checkpoint.npz"), "--data",
                     f"x={tmp_path / 'x.npy'}", "--outputs", "logits", "--chunk-rows", "128",
                     "-o", str(tmp_path / "y.npy"), "--cluster", address]) == 0
    assert "300 rows in 3 chunks" in capsys.readouterr().out
    local = cli.main(["run", MLP, "--checkpoint", str(runs / "checkpoint.npz"), "-i",
                      f"x={tmp_path / 'x.npy'}", "--outputs", "logits", "-o",
                      str(tmp_path / "y.npz")])
    assert local == 0
    with np.load(tmp_path / "y.npz") as here:
        np.testing.assert_allclose(np.load(tmp_path / "y.npy"), here["logits"], rtol=1e-5,
                                   atol=1e-6)      # chunks of other sizes: BLAS rounding
    assert cli.main(["visualize", CNN, "--layer", "conv1", "--channels", "0", "1", "--steps",
                     "2", "--out", str(tmp_path / "g.png"), "--cluster", address]) == 0
    assert (tmp_path / "g.png").exists()


def test_early_stopping_works_as_for_local_training(client, digits):
    """Stopped after `patience` bad epochs and the best params restored, as the local trainer
    does with the same settings (float64: the two take the same steps)."""
    data = digits.subset(np.arange(160))
    early = {"monitor": "val_loss", "patience": 1, "restore_best": True}
    settings = dict(epochs=20, optimizer={"kind": "sgd", "lr": 3.0})

    def fit(trainer_class, **kwargs):
        graph = load(MLP)
        config = from_graph(graph).replace(validation_split=0.25, early_stopping=early,
                                           **settings)
        trainer = trainer_class(compile(graph, dtype="float64", seed=config.seed), config,
                                **kwargs)
        trainer.fit(data)
        return trainer

    spread = fit(fd.DistributedTrainer, client=client, workers=2)
    spread.close()
    local = fit(Trainer, micro_batch=16)       # the shards' split: the same sums, bit for bit
    assert spread.stopped and local.stopped and spread.epoch == local.epoch < 20
    for name, value in local.plan.params.items():
        np.testing.assert_allclose(spread.plan.params[name], value, rtol=1e-9, atol=1e-12)


def test_a_killed_worker_costs_one_log_line_and_no_step(client):
    """Last: it kills a worker of the shared cluster (its nanny starts a new one)."""
    lines = []
    pids = client.run(os.getpid)
    victim = sorted(pids)[1]

    def kill_after_two_steps(trainer):
        if trainer.step == 2:
            os.kill(pids[victim], signal.SIGKILL)

    data = load_data("digits")
    data = Dataset(data.x[:160], data.y[:160])
    spread = _fit(fd.DistributedTrainer, data, "float64", optimizer=SGD, client=client,
                  workers=2, log=lines.append, callbacks=[kill_after_two_steps], poll=0.2)
    spread.close()
    local = _fit(Trainer, data, "float64", optimizer=SGD)
    lines = [line for line in lines if not line.startswith("epoch ")]   # progress lines
    assert len(lines) == 1 and victim in lines[0] and "step 3" in lines[0], lines
    assert spread.step == local.step == 5 and len(spread.stats) == 5
    for name, value in local.plan.params.items():       # 2 shards, then 1: float64 rounding
        np.testing.assert_allclose(spread.plan.params[name], value, rtol=1e-10, atol=1e-12)
