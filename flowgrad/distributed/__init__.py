"""Work that outgrows one process, run on Dask distributed.

flowgrad does not grow its own cluster: data-parallel training (:func:`train`), rendering every
channel of a layer (:func:`render_layer_distributed`) and inference over a large array
(:func:`run_distributed`) run on a Dask ``Client`` — an embedded ``LocalCluster`` sized to the
machine by default, any scheduler (``cluster="tcp://host:8786"``, ``FLOWGRAD_CLUSTER``, or your
own ``client=``) otherwise: the same calls on a laptop, on Slurm through dask-jobqueue or on
Kubernetes.  Workers receive the graph once (YAML text or ONNX bytes, plus the plugin paths) and
keep the compiled plan; results equal the single-process ones for the same seeds.

Dask is an optional extra (``pip install 'flowgrad[distributed]'``); ``import flowgrad`` never
imports it, and this package says how to install it when it is missing.
"""
from __future__ import annotations

from ..errors import FlowgradError

try:                              # the check; the modules import what they use
    import distributed as _dask_distributed
except ImportError as e:          # pragma: no cover - exercised in a subprocess by the tests
    raise FlowgradError("flowgrad.distributed needs Dask distributed, which is not installed "
                        f"({e}): pip install 'flowgrad[distributed]'") from None
del _dask_distributed

from .cluster import CLUSTER_ENV, connect
from .inference import InferenceRun, run_distributed
from .rendering import render_layer_checkpoint, render_layer_distributed
from .shipping import GraphSource, ship
from .train_run import train
from .training import DistributedTrainer, StepStats

__all__ = ["CLUSTER_ENV", "DistributedTrainer", "GraphSource", "InferenceRun", "StepStats",
           "connect", "render_layer_checkpoint", "render_layer_distributed", "run_distributed",
           "ship", "train"]
