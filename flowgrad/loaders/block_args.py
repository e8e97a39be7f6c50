"""Block arguments in a block's body: ``$name``, ``$(expression)`` and ``${expression}``.

A block's body is written once and instantiated with different arguments (channel counts,
strides), so its strings may name arguments.  ``$ch`` is the argument's value; ``$(ch * 2)``
evaluates a small expression.  ``${...}`` means the same as ``$(...)``, but braces end a plain
scalar inside a flow collection (``[${ch}, 3]`` is not valid YAML), so ``$(...)`` is the form
to use there.  A string that is one substitution and nothing else takes the value's type
(``shape: [$ch, 3]`` gives an integer); one with other text around it becomes a string
(``doc: conv of $ch channels``); ``$$`` is a dollar sign.

Expressions are parsed with :mod:`ast` and walked over a whitelist (integer and float
arithmetic without powers, comparisons, ``and``/``or``/``not``, ``a if c else b`` and the
block's argument names); nothing is ever evaluated as code, as a graph file must never run it.
"""
from __future__ import annotations

import ast
import operator
import re
from typing import Any, Mapping

from ..errors import did_you_mean

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Div: operator.truediv}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
            ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
_ALLOWED = ("+ - * / // %, comparisons, and/or/not, 'a if c else b', numbers and the block's "
            "arguments")


class ArgError(ValueError):
    """A substitution cannot be made; the message says why (the caller adds the location)."""


def substitute(text: str, args: Mapping[str, Any]) -> Any:
    """``text`` with its ``$`` substitutions made (see the module doc)."""
    if "$" not in text:
        return text
    pieces: list[Any] = []
    start = 0
    while (dollar := text.find("$", start)) >= 0:
        pieces.append(text[start:dollar])
        value, start = _one(text, dollar, args)
        if dollar == 0 and start == len(text):
            return value                    # the whole string: keep the value's type
        if not isinstance(value, (str, int, float)):
            raise ArgError(f"'{text}': a {type(value).__name__} cannot be part of a string")
        pieces.append(value if isinstance(value, str) else _text(value))
    pieces.append(text[start:])
    return "".join(pieces)


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _one(text: str, dollar: int, args: Mapping[str, Any]) -> tuple[Any, int]:
    """The value of the substitution starting at ``text[dollar]`` and where it ends."""
    after = text[dollar + 1:dollar + 2]
    if after == "$":
        return "$", dollar + 2
    if after in ("(", "{"):
        close = _closing(text, dollar + 1)
        return evaluate(text[dollar + 2:close], args), close + 1
    name = _NAME.match(text, dollar + 1)
    if name is None:
        raise ArgError(f"'{text}': '$' starts a block argument: $name, $(expression) or "
                       "${expression}; write $$ for a dollar sign")
    return _lookup(name.group(), args), name.end()


def _closing(text: str, opening: int) -> int:
    """The index of the bracket closing the one at ``text[opening]``."""
    left = text[opening]
    right = ")" if left == "(" else "}"
    depth = 0
    for i in range(opening, len(text)):
        depth += (text[i] == left) - (text[i] == right)
        if depth == 0:
            return i
    raise ArgError(f"'{text}': '{left}' is never closed")


def _lookup(name: str, args: Mapping[str, Any]) -> Any:
    if name not in args:
        known = ", ".join(args) or "none"
        raise ArgError(f"unknown block argument '{name}'{did_you_mean(name, args)} "
                       f"(arguments: {known})")
    return args[name]


def evaluate(expression: str, args: Mapping[str, Any]) -> Any:
    """The value of a whitelisted ``expression`` over ``args`` (see the module doc)."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, RecursionError):
        raise ArgError(f"cannot read '{_short(expression)}' as an expression (allowed: "
                       f"{_ALLOWED})") from None
    try:
        return _eval(tree.body, args, expression)
    except ZeroDivisionError:
        raise ArgError(f"'{_short(expression)}' divides by zero") from None
    except TypeError as e:
        raise ArgError(f"cannot evaluate '{_short(expression)}': {e}") from None
    except RecursionError:
        raise ArgError(f"'{_short(expression)}' is nested too deeply") from None


def _short(expression: str) -> str:
    return expression if len(expression) <= 60 else expression[:57] + "..."


def _eval(node: ast.AST, args: Mapping[str, Any], expression: str) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
        return node.value
    if isinstance(node, ast.Name):
        return _lookup(node.id, args)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left, args, expression), _eval(node.right, args, expression)
        if not all(isinstance(v, (int, float)) for v in (left, right)):
            raise ArgError(f"'{expression}': arithmetic takes numbers")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        value = _eval(node.operand, args, expression)
        if isinstance(node.op, ast.Not):
            return not value
        if not isinstance(value, (int, float)):
            raise ArgError(f"'{expression}': arithmetic takes numbers")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left = _eval(node.left, args, expression)
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, args, expression)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BoolOp):
        values = (bool(_eval(v, args, expression)) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.IfExp):
        chosen = node.body if _eval(node.test, args, expression) else node.orelse
        return _eval(chosen, args, expression)
    raise ArgError(f"'{expression}': only {_ALLOWED} are allowed in a block expression")
