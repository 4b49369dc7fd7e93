"""Per-generation schedules: a value that may depend on the generation t = 1, 2, ... (sample sizes, real fraction).

A schedule is written as
- a number (`100`): the same value every generation;
- a list (`[1000, 100]` or `1000;100`): the value at t = 1, 2, ...; the last entry repeats;
- an expression in `t` (`100 * t`, `max(10, 1000 / t)`, `1000 if t == 1 else 100`): numbers, `t`, `+ - * / // % **`,
  comparisons, `a if c else b`, and `min max abs round floor ceil sqrt log exp`.

Configs keep the text (or the number) so `config.json` stays plain; `Schedule.parse` turns it into a callable.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gentool.core.errors import BadInput

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min, "max": max, "abs": abs, "round": round, "floor": math.floor, "ceil": math.ceil,
    "sqrt": math.sqrt, "log": math.log, "exp": math.exp,
}


def _evaluate(node: ast.AST, t: int) -> float:
    """Value of a parsed expression node at generation `t` (only the grammar of the module docstring)."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, t)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id == "t":
        return t
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left, t), _evaluate(node.right, t)
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e12):
            raise ValueError("power out of range")  # 10 ** 10 ** 100 would never finish
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand, t)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
        return float(_COMPARE[type(node.ops[0])](_evaluate(node.left, t), _evaluate(node.comparators[0], t)))
    if isinstance(node, ast.IfExp):
        return _evaluate(node.body, t) if _evaluate(node.test, t) else _evaluate(node.orelse, t)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
            and not node.keywords):
        return _FUNCTIONS[node.func.id](*(_evaluate(a, t) for a in node.args))
    raise ValueError(ast.dump(node)[:40])


@dataclass(frozen=True)
class Schedule:
    """A per-generation value: `values` (t = 1, 2, ...; the last repeats) or an expression `expr` in `t`."""

    text: str
    values: tuple[float, ...] = ()
    tree: ast.Expression | None = None

    @staticmethod
    def parse(value: object, name: str) -> Schedule:
        """A schedule from a number, a list of numbers or a text (see the module docstring); `BadInput`
        naming `name` otherwise."""
        if isinstance(value, list | tuple):
            return Schedule._list(value, name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return Schedule(str(value), (float(value),))
        text = str(value).strip()
        if text.startswith("[") and text.endswith("]"):
            return Schedule._list(text[1:-1].split(","), name)
        if ";" in text:
            return Schedule._list(text.split(";"), name)
        try:
            tree = ast.parse(text, mode="eval")
            Schedule(text, tree=tree).at(1)
        except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError):
            raise BadInput(f"{name} must be a number, a list of numbers or an expression in t "
                           f"(e.g. 100, [1000, 100], 100 * t), got {text!r}") from None
        return Schedule(text, tree=tree)

    @staticmethod
    def _list(items: Any, name: str) -> Schedule:
        try:
            values = tuple(float(v) for v in items if str(v).strip())
        except (TypeError, ValueError):
            values = ()
        if not values:
            raise BadInput(f"{name} must be a non-empty list of numbers, got {items!r}")
        return Schedule("[" + ", ".join(f"{v:g}" for v in values) + "]", values)

    @property
    def constant(self) -> bool:
        return self.tree is None and len(self.values) == 1

    def at(self, t: int) -> float:
        """The value at generation `t ≥ 1`."""
        if self.tree is None:
            return self.values[min(t, len(self.values)) - 1]
        return float(_evaluate(self.tree, t))

    def ints(self, generations: int) -> list[int]:
        """`round(value)` at t = 1..generations."""
        return [round(self.at(t)) for t in range(1, generations + 1)]


def schedule_setting(value: object) -> int | float | str:
    """Config parser: numbers stay numbers (integers as int), anything else is kept as its canonical text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, list | tuple):
        return Schedule.parse(value, "schedule").text
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return Schedule.parse(text, "schedule").text if text.startswith("[") else text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
