"""The input optimizer's settings: :class:`VisualizeConfig` and :func:`from_graph`.

The YAML front end reads a graph's ``visualize:`` section into a :class:`VisualizeConfig`
while it loads the file (:mod:`flowgrad.loaders.visualize_section`, where the defaults live),
so a mistake there is reported with the file's others.
"""
from ..loaders.visualize_section import VisualizeConfig, from_graph

__all__ = ["VisualizeConfig", "from_graph"]
