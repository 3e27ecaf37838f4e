"""Checked settings: a rule (type and range) per field of a config dataclass, applied whenever
the field is set: by the command line (``key=value``), a YAML file, or Python (the
constructor, ``dataclasses.replace``, attribute assignment).

A value that breaks its rule raises ``SettingError``, whose message is one line naming the
setting, the value and what is allowed; the command line prints it after ``error:``::

    >>> RunConfig(lr="abc")
    SettingError: setting lr='abc' is not allowed: lr must be a number > 0.

Values are normalised as they are checked: an integer where a float is expected becomes a
float, and a YAML string such as ``1e-3`` (PyYAML reads it as text) becomes 0.001.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable


class SettingError(ValueError):
    """A setting with a value it cannot take. The message is one line."""


def refuse(name: str, value: Any, allowed: str) -> SettingError:
    return SettingError(f"setting {name}={value!r} is not allowed: {name} must be {allowed}.")


def _bound(low, high, low_open) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]" if not low_open else f" in ({low}, {high}]"
    if low is not None:
        return f" > {low}" if low_open else f" >= {low}"
    return f" <= {high}" if high is not None else ""


@dataclass(frozen=True)
class Rule:
    """What one setting may be: ``kind`` is int, float, bool, choice, int_list or mapping."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself not allowed (lr > 0)
    choices: Callable[[], Iterable[str]] | tuple = ()
    optional: bool = False  # None (YAML null) allowed
    example: str = ""

    def describe(self) -> str:
        text = {
            "int": "an integer" + _bound(self.low, self.high, self.low_open),
            "float": "a number" + _bound(self.low, self.high, self.low_open),
            "bool": "true or false",
            "choice": "one of " + ", ".join(self._choices()),
            "int_list": "a list of integers" + _bound(self.low, self.high, self.low_open),
            "mapping": "a mapping of names to values",
        }[self.kind]
        text += f", e.g. {self.example}" if self.example else ""
        return text + (", or null" if self.optional else "")

    def _choices(self) -> list[str]:
        return list(self.choices() if callable(self.choices) else self.choices)

    def _in_range(self, v) -> bool:
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            return False
        return self.high is None or v <= self.high

    def __call__(self, name: str, value: Any) -> Any:
        """``value`` normalised, or a SettingError."""
        if value is None and self.optional:
            return None
        bad = refuse(name, value, self.describe())
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise bad
        if self.kind == "choice":
            if isinstance(value, str) and value in self._choices():
                return value
            raise bad
        if self.kind == "mapping":
            if isinstance(value, dict) and all(isinstance(k, str) for k in value):
                return value
            raise bad
        if self.kind == "int_list":
            if not isinstance(value, (list, tuple)):
                raise bad
            items = [_integer(v) for v in value]
            if any(v is None or not self._in_range(v) for v in items):
                raise bad
            return items
        number = _integer(value) if self.kind == "int" else _float(value)
        if number is None or not self._in_range(number):
            raise bad
        return number


def _integer(value) -> int | None:
    """An int from an int, an integral float (8.0) or a numeric string ("8"); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _float(value) -> float | None:
    """A finite float from a number or a numeric string ("1e-3"); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def integer(low=None, high=None, *, optional=False, example="") -> Rule:
    return Rule("int", low, high, optional=optional, example=example)


def number(low=None, high=None, *, above=None, optional=False, example="") -> Rule:
    """A finite number in [low, high]; ``above`` instead of ``low`` excludes the bound itself."""
    if above is not None:
        return Rule("float", above, high, low_open=True, optional=optional, example=example)
    return Rule("float", low, high, optional=optional, example=example)


def flag() -> Rule:
    return Rule("bool")


def one_of(choices: Callable[[], Iterable[str]] | tuple, *, optional=False) -> Rule:
    return Rule("choice", choices=choices, optional=optional)


def int_list(low=None, *, example="") -> Rule:
    return Rule("int_list", low, example=example)


def mapping(example="") -> Rule:
    return Rule("mapping", example=example)


class Checked:
    """Dataclass mixin: every field named in ``RULES`` is checked when it is set; ``check()``
    (run after construction and by the code that uses the config) adds checks across fields."""

    RULES: ClassVar[dict[str, Rule | Callable[[str, Any], Any]]] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        rule = self.RULES.get(name)
        object.__setattr__(self, name, value if rule is None else rule(name, value))

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Checks that involve more than one field; raise SettingError."""
