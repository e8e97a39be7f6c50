"""What the ``flowgrad`` commands do, as Python functions: train and report, evaluate a
checkpoint, visualize neurons, the demo.

Each takes a graph (or its path) and plain keyword settings, writes its files and returns a
small record of what it did, so a script or notebook gets exactly what the command line
gets; the commands in :mod:`flowgrad.cli` only turn arguments into these calls.

    import flowgrad
    run = flowgrad.train_and_report("graphs/digits_mlp.yaml", "runs/mlp", epochs=5)
    run.metrics["test_accuracy"]                       # 0.97…; files in runs/mlp/
    flowgrad.evaluate_checkpoint("graphs/digits_mlp.yaml", run.checkpoint).metrics
    flowgrad.visualize_checkpoint("graphs/digits_mlp.yaml", "runs/mlp/logits.png",
                                  checkpoint=run.checkpoint, each="logits")
    flowgrad.render_layer_checkpoint("graphs/digits_cnn.yaml", "conv1", "runs/cnn/conv1.png",
                                     checkpoint="runs/cnn/checkpoint.npz")
    flowgrad.run_demo("out/demo")
"""
from .demo import DemoReport, run_demo
from .training import Evaluation, TrainingRun, evaluate_checkpoint, load_trainable, \
    train_and_report
from .visualizing import (LayerRun, VisualizationRun, optimize_images, render_layer_checkpoint,
                          visualize_checkpoint)

__all__ = ["DemoReport", "Evaluation", "LayerRun", "TrainingRun", "VisualizationRun",
           "evaluate_checkpoint", "load_trainable", "optimize_images", "render_layer_checkpoint",
           "run_demo", "train_and_report", "visualize_checkpoint"]
