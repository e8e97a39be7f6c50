"""Hook declarations.  Each hook's docstring is its documentation.

Every hook is ``flowgrad_``-prefixed and called with keyword arguments.  Built-in ops register
through exactly the same hooks as third-party plugins.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("flowgrad")
hookimpl = pluggy.HookimplMarker("flowgrad")


@hookspec
def flowgrad_register_ops():
    """Return a list of :class:`flowgrad.Op` subclasses this plugin provides.

    Called once when a registry is built; every plugin's list is collected (not firstresult).
    Two plugins returning ops with the same ``type`` is an error naming both.
    """


@hookspec
def flowgrad_register_optimizers():
    """Return a list of :class:`flowgrad.optim.Optimizer` subclasses this plugin provides.

    Each class names itself with ``kind`` (used as ``train: optimizer: {kind: ...}`` in YAML
    and by ``flowgrad.optim.make_optimizer``), declares its extra settings with their defaults
    in ``defaults`` and implements ``update(name, leaf, grad, state, lr, decay)``, changing
    ``leaf`` in place.  The same optimizers drive training and input optimization.  Called
    whenever the optimizer kinds are listed; every plugin's list is collected (not
    firstresult).  A kind registered twice, or clashing with a built-in, is an error.
    """


@hookspec
def flowgrad_register_objectives():
    """Return a mapping ``{name: factory}`` of input-optimization objectives.

    A factory is called with the positional arguments written in an objective spec, e.g.
    ``name(node, 3)`` in ``flowgrad visualize --objective 'name(node, 3)'``, and returns a
    :class:`flowgrad.visualize.objectives.Objective`: it names the graph values it reads
    (``refs``) and maps their batched activations to one value per image plus the gradient
    of the sum of those values.  Objectives combine with ``+``, ``-`` and scalar ``*`` like
    the built-ins (neuron, channel, layer, logit, direction, cosine, diversity).  Every
    plugin's mapping is collected (not firstresult); a name registered twice is an error.
    """


@hookspec
def flowgrad_onnx_ops():
    """Return ONNX translations this plugin provides, as a list of tuples
    ``(domain, op_type, since_version, handler)`` or ``(..., handler, static_inputs)``.

    Lets a plugin import ONNX ops flowgrad does not know, typically custom-domain ops (e.g.
    ``("com.example", "Swish", 1, handler)``).  For a model importing ``domain`` at version *v*
    the handler with the highest ``since_version <= v`` is used.  ``handler(b, attrs, inputs)``
    receives the import builder ``b`` (call ``b.op("flowgrad_op_type", [inputs...], **attrs)``
    to add flowgrad ops; ``b.static(value, what)`` reads a load-time constant), the node's
    attributes as Python values and one ``Value`` (or None) per ONNX input, and returns one
    ``Value`` per ONNX output — see :mod:`flowgrad.onnx.opset`.  ``static_inputs`` lists
    input positions whose values are needed at load time (initializers read only there become
    constants, not params).  Every plugin's list is collected (not firstresult).
    """
