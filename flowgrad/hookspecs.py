"""Hook declarations: one registration hook per kind of extension.  Each docstring is the hook's
documentation.

Every hook is ``flowgrad_``-prefixed, receives one argument, a registrar, and returns nothing:
the plugin calls ``registrar.add(...)`` with what it provides.  pluggy checks an
implementation's signature against these declarations when the plugin is registered, so a
misspelt argument is an error at load time, naming the plugin.  The built-ins
(:mod:`flowgrad.builtins`) register through exactly these hooks, and every kind detects a name
registered twice and names both plugins.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("flowgrad")
hookimpl = pluggy.HookimplMarker("flowgrad")


@hookspec
def flowgrad_register_ops(ops):
    """Register op classes: ``ops.add(MyOp, ...)`` with :class:`flowgrad.Op` subclasses.

    Each class names itself with ``type`` (the name used in YAML).  Returns nothing.  Two plugins
    (or a plugin and a built-in) registering one name is an error naming both; a class that is
    not an Op, lacks ports, or declares an attribute named like a member of the op contract
    (``outputs``, ``forward``...) is refused when the op table is built.
    """


@hookspec
def flowgrad_register_onnx(onnx):
    """Register ONNX translations: ``onnx.add(T)`` with :class:`flowgrad.onnx.Translations` tables.

    A table holds import translations (an ONNX ``(domain, op_type, since_version)`` to flowgrad
    ops, e.g. a custom-domain op ``("com.example", "Swish", 1)``) and export translations (a
    flowgrad op type to ONNX nodes, in the plugin's own domain or as a function of standard ops)
    side by side.  For a model importing a domain at version *v*, the import translation with
    the highest ``since <= v`` is used.  Returns nothing.  One key declared by two plugins, or
    by a plugin and a built-in, is an error naming both.
    """


@hookspec
def flowgrad_register_optimizers(optimizers):
    """Register optimizers: ``optimizers.add(MyOptimizer)`` with
    :class:`flowgrad.optim.Optimizer` subclasses.

    Each class names itself with ``kind`` (used as ``train: optimizer: {kind: ...}`` in YAML
    and by ``flowgrad.optim.make_optimizer``), declares its extra settings with their defaults
    in ``defaults`` and implements ``update(name, leaf, grad, state, lr, decay)``, changing
    ``leaf`` in place.  The same optimizers drive training and input optimization.  Returns
    nothing; a kind registered twice, or clashing with a built-in, is an error naming both.
    """


@hookspec
def flowgrad_register_schedules(schedules):
    """Register learning-rate schedules: ``schedules.add(MySchedule)`` with
    :class:`flowgrad.optim.Schedule` subclasses.

    Each class names itself with ``kind`` (``train: schedule: {kind: ...}``), declares its
    settings with defaults in ``defaults`` and implements ``rate(step)``; the base class adds
    the linear warm-up every schedule accepts.  Returns nothing; a kind registered twice is an
    error naming both plugins.
    """


@hookspec
def flowgrad_register_objectives(objectives):
    """Register input-optimization objectives: ``objectives.add(name, factory)``.

    A factory is called with the positional arguments written in an objective spec, e.g.
    ``name(node, 3)`` in ``flowgrad visualize --objective 'name(node, 3)'``, and returns a
    :class:`flowgrad.visualize.objectives.Objective`: it names the graph values it reads
    (``refs``) and maps their batched activations to one value per image plus the gradient
    of the sum of those values.  Objectives combine with ``+``, ``-`` and scalar ``*`` like
    the built-ins (neuron, channel, layer, logit, direction, cosine, diversity).  Returns
    nothing; a name registered twice is an error naming both plugins.
    """


@hookspec
def flowgrad_register_parameterizations(parameterizations):
    """Register image parameterizations for input optimization:
    ``parameterizations.add(name, factory)``.

    ``factory(shape, *, sd, decay)`` receives the image shape ``(C, H, W)`` and returns an
    object with ``init(rng) -> array`` (the parameters' starting values) and
    ``forward(p) -> (image, backward)`` where ``backward(grad_image) -> grad_p``.  Chosen with
    ``--param NAME`` or ``visualize(..., param=NAME)``; built in: ``fourier``, ``pixels``,
    ``cppn``, ``lowres`` and ``laplacian``.  An object with ``colour_decorrelation = False``
    (like ``cppn``) makes its own colours and skips the colour decorrelation.
    Returns nothing; a name registered twice is an error naming both plugins.
    """


@hookspec
def flowgrad_register_transforms(transforms):
    """Register robustness transforms for input optimization: ``transforms.add(name, factory)``.

    ``factory(value)`` receives the text after ``name=`` in a transform spec such as
    ``--transforms 'jitter=2,noise=0.1'`` and returns an object with
    ``apply(x, rngs) -> (x, backward)``: ``x`` is a batch ``(N, C, H, W)``, image ``i`` draws
    its randomness from ``rngs[i]``, and ``backward(grad) -> grad`` is the exact transpose.
    The built-in names (``pad``, ``jitter``, ``scale``, ``rotate``, ``value``) are settings of
    one folded affine resampling.  Returns nothing; a name registered twice is an error naming
    both plugins.
    """


@hookspec
def flowgrad_register_data_loaders(data_loaders):
    """Register training-data loaders: ``data_loaders.add(name, loader)``.

    ``name`` is either a data-set name given as ``--data NAME`` (like the built-in ``digits``)
    or a file suffix starting with a dot (like ``.npz``) for files given as ``--data PATH``.
    ``loader(spec)`` receives that name or path and returns a :class:`flowgrad.data.Dataset`.
    Returns nothing; a name or suffix registered twice is an error naming both plugins.
    """

