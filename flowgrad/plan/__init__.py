"""The plan: a prepared graph compiled into programs, and everything needed to run them.

One job per module:

* :mod:`.programs` — compiling: order, value slots, which nodes run forward and backward, what
  to free when;
* :mod:`.run` — the forward and backward hot loops, with the contract checks of a first run;
* :mod:`.params` — the parameter store: live param arrays, casting, state dicts;
* :mod:`.fusion` — chains run as one step when evaluating;
* :mod:`.memory` — activation buffers recycled between ops and runs;
* :mod:`.memo` — a frozen plan's shape-only steps, computed once per input shape;
* :mod:`.plan` — :class:`Plan`, which ties them together, and :func:`compile`.
"""
from .plan import Plan, compile

__all__ = ["Plan", "compile"]
