"""The front end reads train: and visualize: into typed configs, and reports their mistakes with
the file's YAML, wiring and shape mistakes, in one round (`flowgrad check` shows them all)."""
from __future__ import annotations

import pytest

import flowgrad
import flowgrad.optim
from flowgrad.cli import main
from flowgrad.errors import GraphError
from flowgrad.loaders.train_section import TrainConfig
from flowgrad.loaders.visualize_section import VisualizeConfig
from flowgrad.train_config import from_graph as train_config
from flowgrad.visualize.settings import from_graph as visualize_config

GRAPH = """\
flowgrad: 1
inputs: {x: {shape: [3]}, label: {shape: [], dtype: int64}}
params:
  W: {shape: [3, 4], init: {kind: glorot_uniform}}
  b: {shape: [4], init: {kind: zeros}}
nodes:
  fc:   {op: dense, in: {x: x, W: W, b: b}}
  h:    {op: relu, in: fc}
  g:    {op: relu, in: h}
  loss: {op: softmax_cross_entropy, in: {logits: h, labels: label}}
outputs: [h, g, loss]
"""
TRAIN = """\
train:
  optimizer: {kind: adam, lr: 0.01}
  batch_size: 16
"""
VISUALIZE = """\
visualize:
  each: h
  steps: 20
"""
WIRING = ("g:    {op: relu, in: h}", "g:    {op: relu, in: hh}", 9, 24, "unknown value 'hh'")
SHAPE = ("shape: [3, 4]", "shape: [5, 4]", 7, 3, "x has 3 features but W expects 5")


def write(tmp_path, text):
    path = tmp_path / "g.yaml"
    path.write_text(text)
    return path


def check_report(path, capsys):
    """`flowgrad check`'s exit status and stderr, run in-process."""
    status = main(["check", str(path), "--no-gradients"])
    return status, capsys.readouterr().err


@pytest.mark.parametrize("section,old,new,fragment", [
    (TRAIN, "batch_size: 16", "batch_sise: 16", "unknown key 'batch_sise' in 'train'; did you "
                                                "mean 'batch_size'?"),
    (VISUALIZE, "steps: 20", "stepz: 20", "unknown key 'stepz' in 'visualize'; did you mean "
                                          "'steps'?"),
])
def test_check_reports_wiring_shape_and_section_errors_in_one_round(tmp_path, capsys, section,
                                                                    old, new, fragment):
    text = GRAPH + section
    for before, after, *_ in (WIRING, SHAPE):
        text = text.replace(before, after, 1)
    path = write(tmp_path, text.replace(old, new, 1))
    status, err = check_report(path, capsys)
    assert status == 1 and "Traceback" not in err
    line = next(i + 1 for i, t in enumerate(text.splitlines()) if old.split(":")[0] in t)
    for where, message in ((f"{path}:{WIRING[2]}:{WIRING[3]}:", WIRING[4]),
                           (f"{path}:{SHAPE[2]}:{SHAPE[3]}:", SHAPE[4]),
                           (f"{path}:{line}:3:", fragment)):
        assert f"{where} error: " in err and message in err, err
    assert err.rstrip().endswith("3 errors")
    # in the order of the file: the shape error (line 7) before the wiring error (line 9)
    assert err.index(SHAPE[4]) < err.index(WIRING[4]) < err.index(fragment)


def test_sections_become_typed_configs_on_the_graph(tmp_path):
    graph = flowgrad.load(write(tmp_path, GRAPH + TRAIN + VISUALIZE))
    train = graph.meta["train"]
    assert isinstance(train, TrainConfig)
    assert train.optimizer == {"kind": "adam", "lr": 0.01} and train.batch_size == 16
    assert train.epochs == TrainConfig().epochs                  # the one set of defaults
    # what the graph implies is filled in while loading
    assert (train.minimize, train.features, train.labels, train.logits) == (
        {"loss": 1.0}, "x", "label", "h")
    visualize = graph.meta["visualize"]
    assert visualize == VisualizeConfig(each="h", steps=20)
    # consumers get copies
    copy = train_config(graph)
    copy.optimizer["lr"] = 1.0
    assert graph.meta["train"].lr == 0.01
    assert visualize_config(graph) == visualize and visualize_config(graph) is not visualize


def test_a_graph_without_sections_gets_the_defaults(tmp_path):
    graph = flowgrad.load(write(tmp_path, GRAPH))
    assert "train" not in graph.meta and "visualize" not in graph.meta
    empty = flowgrad.load(write(tmp_path, GRAPH + "train:\nvisualize:\n"))
    assert empty.meta["train"] == train_config(graph)
    assert empty.meta["visualize"] == VisualizeConfig()
    assert train_config(graph).features == "x" and train_config(graph).lr == 0.01
    assert visualize_config(graph) == VisualizeConfig()


def test_overrides_keep_what_they_do_not_name():
    config = TrainConfig(optimizer={"kind": "adam", "lr": 0.003, "beta1": 0.8})
    changed = config.replace(lr=0.1, epochs=None, batch_size=8)
    assert changed.optimizer == {"kind": "adam", "lr": 0.1, "beta1": 0.8}
    assert (changed.epochs, changed.batch_size) == (config.epochs, 8)
    early = TrainConfig(early_stopping={"monitor": "val_accuracy"}).early_stopping
    assert early["mode"] == "max" and early["patience"] == 5 and early["restore_best"]


def errors_of(tmp_path, text):
    with pytest.raises(GraphError) as info:
        flowgrad.load(write(tmp_path, text))
    return [(d.loc.line, d.loc.col, d.message) for d in info.value.diagnostics]


@pytest.mark.parametrize("setting,line,col,fragment", [
    ("schedule: {kind: step, min_lr: 0.1}", 13, 26,
     "schedule 'step' has no setting 'min_lr'"),
    ("schedule: {kind: cosine, warmup_epochs: x}", 13, 43,
     "schedule setting 'warmup_epochs' must be a number"),
    ("optimizer: {kind: sgd, nesterov: 1}", 13, 36, "'nesterov' must be true or false"),
    ("optimizer: {kind: adamm}", 13, 21, "unknown optimizer 'adamm'; did you mean 'adam'?"),
    ("inputs: {features: xx}", 13, 22, "'xx' is not an input of the graph; did you mean 'x'?"),
    ("early_stopping: {patience: 0}", 13, 30, "'patience' must be an integer >= 1"),
    ("test_split: 1.5", 13, 15, "'test_split' must be a fraction in [0, 1)"),
    ("clip_grad_norm: -1", 13, 19, "'clip_grad_norm' must be a positive number"),
    ("optimizer: {kind: [1]}", 13, 21, "unknown optimizer '[1]'"),
    ("early_stopping: {mode: up}", 13, 26, "'mode' must be min or max"),
])
def test_train_mistakes_are_located(tmp_path, setting, line, col, fragment):
    found = errors_of(tmp_path, GRAPH + "train:\n  " + setting + "\n")
    assert any((l, c) == (line, col) and fragment in m for l, c, m in found), found


@pytest.mark.parametrize("setting,line,col,fragment", [
    ("steps: 0", 13, 10, "'steps' must be an integer >= 1"),
    ("each: hh", 13, 9, "unknown value 'hh'; did you mean 'h'?"),
    ("objectives: ['h[0]', 'h[']", 13, 24, "objective 'h['"),
    ("penalties: {l3: 1}", 13, 15, "unknown penalty 'l3'"),
    ("penalties: {l2: x}", 13, 19, "penalty weight must be a number"),
    ("range: [1, 0]", 13, 10, "'range' must be [low, high] with low < high"),
    ("optimizer: adamm", 13, 14, "unknown optimizer 'adamm'; did you mean 'adam'?"),
    ("transforms: 'pad=x'", 13, 15, "'transforms': bad transform setting"),
    ("each: [h]", 13, 9, "'each' must be a string"),
    ("thresholds: [64, 16]", 13, 15, "'thresholds': thresholds must increase, got 64 16"),
    ("thresholds: [0, 16]", 13, 15, "thresholds count steps from 1"),
    ("thresholds: 16", 13, 15, "thresholds must be a list of step counts"),
    ("steps: 4\n  thresholds: [2, 8]", 14, 15, "threshold 8 is beyond the 4 steps"),
    ("preprocess: imagenett", 13, 15, "unknown preprocessing 'imagenett'; did you mean "
                                      "'imagenet'?"),
    ("input_shape: [0, 3]", 13, 16, "'input_shape': input shape must be positive sizes"),
    ("input_shape: 3", 13, 16, "'input_shape': input shape must be positive sizes"),
    ("start: median", 13, 10, "'start': start must be 'noise' or 'mean:DATA'"),
    ("start: 'mean:digits'\n  param: cppn", 13, 10, "needs param: pixels or fourier"),
    ("start: 'mean:digitz'", 13, 10, "'start': no data set 'digitz'; did you mean 'digits'?"),
])
def test_visualize_mistakes_are_located(tmp_path, setting, line, col, fragment):
    found = errors_of(tmp_path, GRAPH + "visualize:\n  " + setting + "\n")
    assert any((l, c) == (line, col) and fragment in m for l, c, m in found), found


def test_visualize_thresholds_preprocess_input_shape_and_start(tmp_path):
    text = GRAPH + ("visualize:\n  each: h\n  thresholds: [4, 8]\n  preprocess: imagenet\n"
                    "  input_shape: [3]\n  param: pixels\n  start: 'mean:digits'\n")
    config = flowgrad.load(write(tmp_path, text)).meta["visualize"]
    assert config.thresholds == (4, 8) and config.steps == 8     # the last threshold
    assert (config.preprocess, config.input_shape, config.start) == (
        "imagenet", (3,), "mean:digits")
    assert config.replace(steps=20).thresholds == (4, 8)
    assert config.replace(thresholds=[2, 3]).steps == 3
    with pytest.raises(flowgrad.FlowgradError, match="thresholds: threshold 8 is beyond"):
        config.replace(steps=5)
    with pytest.raises(flowgrad.FlowgradError, match="preprocess: unknown preprocessing"):
        config.replace(preprocess="vgg")


def test_every_visualize_mistake_is_reported_by_check_in_one_round(tmp_path, capsys):
    text = GRAPH + ("visualize:\n  thresholds: [9, 3]\n  preprocess: nope\n"
                    "  input_shape: [-1]\n  start: x\n")
    status, err = check_report(write(tmp_path, text), capsys)
    assert status == 1 and "4 errors" in err
    for fragment in ("thresholds must increase", "unknown preprocessing 'nope'",
                     "input shape must be positive", "start must be 'noise'"):
        assert fragment in err


def test_a_name_whose_declaration_failed_is_reported_once(tmp_path):
    text = (GRAPH + "train:\n  logits: h\n").replace("{op: relu, in: fc}", "{op: reluu, in: fc}")
    found = errors_of(tmp_path, text)
    assert len(found) == 1 and "unknown op 'reluu'" in found[0][2], found


def test_visualize_param_is_checked_against_the_registered_parameterizations(tmp_path):
    found = errors_of(tmp_path, GRAPH + "visualize:\n  param: fourrier\n")
    assert found == [(13, 10, found[0][2])] and "did you mean 'fourier'?" in found[0][2]
    graph = flowgrad.load(write(tmp_path, GRAPH + "visualize:\n  param: cppn\n"))
    assert graph.meta["visualize"].param == "cppn"


class Exponential(flowgrad.optim.Schedule):
    kind = "exponential"
    defaults = {"decay": 0.99}

    def rate(self, step):
        return self.lr * self.settings["decay"] ** step


class SchedulePlugin:
    @flowgrad.hookimpl
    def flowgrad_register_schedules(self, schedules):
        schedules.add(Exponential)


def test_plugin_schedules_are_checked_against_their_own_settings(tmp_path):
    registry = flowgrad.make_registry(plugins=[SchedulePlugin()], autoload=False)
    text = GRAPH + "train:\n  schedule: {kind: exponential, decay: 0.9, warmup_steps: 2}\n"
    graph = flowgrad.load(write(tmp_path, text), registry=registry)
    assert graph.meta["train"].schedule == {"kind": "exponential", "decay": 0.9,
                                            "warmup_steps": 2}
    with pytest.raises(GraphError, match="schedule 'exponential' has no setting 'gamma'"):
        flowgrad.load(write(tmp_path, text.replace("decay:", "gamma:")), registry=registry)
    with pytest.raises(GraphError, match="unknown schedule 'exponential'"):
        flowgrad.load(write(tmp_path, text))          # not registered in the default registry
