"""flowgrad's own extensions, registered exactly as a third-party plugin registers its own.

This module is the built-in plugin: the plugin manager loads it first, and each hook below adds
one kind of extension through the same registrar a plugin gets.  So a plugin that registers a
name flowgrad already uses gets the same clash error as two plugins would, and
``flowgrad plugins`` lists the built-ins beside everyone else.  Each hook imports its kind's
module only when its table is first needed: listing ops does not import the visualization or
ONNX code.
"""
from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def flowgrad_register_ops(ops):
    from .ops import builtin_ops
    ops.add(*builtin_ops())


@hookimpl
def flowgrad_register_optimizers(optimizers):
    from .optim import SGD, Adam, AdamW, RMSprop
    optimizers.add(SGD, Adam, AdamW, RMSprop)


@hookimpl
def flowgrad_register_schedules(schedules):
    from .optim import Constant, Cosine, StepDecay
    schedules.add(Constant, StepDecay, Cosine)


@hookimpl
def flowgrad_register_objectives(objectives):
    from .visualize.objectives import BUILTIN_OBJECTIVES
    _add_each(objectives, BUILTIN_OBJECTIVES)


@hookimpl
def flowgrad_register_parameterizations(parameterizations):
    from .visualize.param import BUILTIN_PARAMETERIZATIONS
    _add_each(parameterizations, BUILTIN_PARAMETERIZATIONS)


@hookimpl
def flowgrad_register_transforms(transforms):
    from .visualize.transforms import BUILTIN_TRANSFORMS
    _add_each(transforms, BUILTIN_TRANSFORMS)


@hookimpl
def flowgrad_register_data_loaders(data_loaders):
    from .data import BUILTIN_LOADERS
    _add_each(data_loaders, BUILTIN_LOADERS)


@hookimpl
def flowgrad_register_onnx(onnx):
    from .onnx.ops import all_translations
    onnx.add(*all_translations())


def _add_each(registrar, named) -> None:
    """Register every ``{name: factory}`` of a built-in table, in its order."""
    for name, factory in named.items():
        registrar.add(name, factory)
