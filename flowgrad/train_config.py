"""The trainer's settings: :class:`TrainConfig` and :func:`from_graph`.

The YAML front end reads a graph's ``train:`` section into a :class:`TrainConfig` while it
loads the file (:mod:`flowgrad.loaders.train_section`, where the defaults live), so a mistake
there is reported with the file's others; the trainer takes it from here.
"""
from .loaders.train_section import TrainConfig, from_graph

__all__ = ["TrainConfig", "from_graph"]
