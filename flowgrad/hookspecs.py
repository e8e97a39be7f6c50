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
