"""Parsed TOML (or a submitted form) to msgspec Structs, with a problem put in words.

The config and scenario files are edited by hand, so a bad value must be reported as the key
that holds it and a sentence a technician can act on. msgspec stops at the first problem and
says it tersely ("Expected `int` <= 32 - at `$.thermal.i2c_bus`"); Invalid carries the key
path (("thermal", "i2c_bus")) and the message reworded ("Input should be less than or equal to
32"), in the words pydantic used before the kiosk moved to msgspec (its ~15 MB of RSS was
paid by every daemon), and a Literal's choices listed, which msgspec's message leaves out.

Conversion is lax, much as pydantic's was: "5" or 5.0 is taken for an int, "true" or 1 for a
bool, a numpy.float64 for a float. Unlike pydantic, "yes"/"on" is not a bool and a bool is not a
number; and "null" is taken for None in an optional field.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from types import NoneType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import msgspec

T = TypeVar("T")
Loc = tuple[str | int, ...]
DecHook = Callable[[type, Any], Any]


class Invalid(ValueError):
    """Data that does not convert: where (a key path; list items by index) and why, in words."""

    def __init__(self, loc: Loc, message: str) -> None:
        self.loc = loc
        self.message = message
        super().__init__(f"{'.'.join(map(str, loc)) or '<top>'}: {message}")


def convert(data: Any, type_: type[T], *, dec_hook: DecHook | None = None) -> T:
    try:
        return msgspec.convert(_plain(data), type_, strict=False, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        loc, message = explain(str(exc), type_)
        raise Invalid(loc, message) from None


def _plain(value: Any, loc: Loc = ()) -> Any:
    """value made fit for msgspec.convert: float subclasses made floats (msgspec takes only
    exactly float, and a computed scenario holds numpy.float64), and text that is not Unicode
    refused here (msgspec would raise UnicodeEncodeError, naming no key)."""
    if isinstance(value, dict):
        for key in value:
            if isinstance(key, str):
                _check_text(key, loc)
        return {k: _plain(v, (*loc, k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, (*loc, i)) for i, v in enumerate(value)]
    if isinstance(value, float) and type(value) is not float:
        return float(value)
    if isinstance(value, str):
        _check_text(value, loc)
    return value


def _check_text(text: str, loc: Loc) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, as a form decoded with surrogateescape holds
        raise Invalid(loc, "Input should be valid Unicode text") from None


# msgspec's messages (msgspec/_core.c), the part before " - at `$...`".
_UNKNOWN = re.compile(r"Object contains unknown field `(.+)`")
_MISSING = re.compile(r"Object missing required field `(.+)`")
_BOUND = re.compile(r"Expected `(?:int|float)` (>=|>|<=|<) (\S+)")
_LENGTH = re.compile(r"Expected `(str|array|object)` of length (>=|<=) (\d+)")
_PATTERN = re.compile(r"Expected `str` matching regex (.+)")
_TYPE = re.compile(r"Expected `([^`]+)`, got `([^`]+)`")
_ENUM = re.compile(r"Invalid enum value (.+)")
_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")

_BOUND_WORDS = {
    ">=": "greater than or equal to",
    ">": "greater than",
    "<=": "less than or equal to",
    "<": "less than",
}
_EXPECTED = {
    "int": "a valid integer",
    "float": "a valid number",
    "bool": "a valid boolean",
    "str": "a valid string",
    "array": "a valid list",
    "object": "a valid dictionary",
    "null": "none",
}
_GOT = {
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "str": "a string",
    "array": "a list",
    "object": "a table",
    "null": "none",
    "datetime": "a date-time",
    "date": "a date",
    "time": "a time",
}
_LENGTH_NOUN = {"str": ("String", "character"), "array": ("List", "item"), "object": ("Table", "key")}


def explain(error: str, root: type) -> tuple[Loc, str]:
    """(key path, message in words) for a msgspec ValidationError's text, converting to root."""
    text, sep, where = error.rpartition(" - at `")
    if not sep:
        text, where = error, "$`"
    loc: Loc = tuple(name if name else int(index) for name, index in _PART.findall(where[1:-1]))
    if m := _UNKNOWN.fullmatch(text):
        return (*loc, m.group(1)), "Extra inputs are not permitted"
    if m := _MISSING.fullmatch(text):
        return (*loc, m.group(1)), "Field required"
    if (_ENUM.fullmatch(text) or _TYPE.fullmatch(text)) and (choices := _literal_at(root, loc)):
        return loc, f"Input should be {_either(choices)}"
    if m := _BOUND.fullmatch(text):
        bound = m.group(2).removesuffix(".0")  # msgspec shows a float field's bound 0 as 0.0
        return loc, f"Input should be {_BOUND_WORDS[m.group(1)]} {bound}"
    if m := _LENGTH.fullmatch(text):
        noun, unit = _LENGTH_NOUN[m.group(1)]
        count = int(m.group(3))
        most = "at least" if m.group(2) == ">=" else "at most"
        return loc, f"{noun} should have {most} {count} {unit}{'' if count == 1 else 's'}"
    if m := _PATTERN.fullmatch(text):
        return loc, f"String should match pattern {m.group(1)}"
    if m := _TYPE.fullmatch(text):
        expected = " or ".join(_EXPECTED.get(t, f"`{t}`") for t in m.group(1).split(" | "))
        got = _GOT.get(m.group(2), m.group(2))
        if got == "a number" and "int" in m.group(1):
            got = "a number with a fractional part"  # lax conversion takes 5.0 for an int
        return loc, f"Input should be {expected}, not {got}"
    if m := _ENUM.fullmatch(text):
        return loc, f"Input should be one of the allowed values, not {m.group(1)}"
    # A __post_init__ check or a dec_hook: already in words.
    return loc, text


def _either(values: tuple[Any, ...]) -> str:
    shown = [repr(v) for v in values]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def _literal_at(root: type, loc: Loc) -> tuple[Any, ...] | None:
    """The allowed values, in the order declared, when the field at loc is a Literal (or an
    optional one). From the annotations: msgspec.inspect would give them sorted."""
    t: Any = root
    for part in loc:
        t = _bare(t)
        if isinstance(part, str) and isinstance(t, type) and issubclass(t, msgspec.Struct):
            t = next((f.type for f in msgspec.structs.fields(t) if f.encode_name == part), None)
        elif isinstance(part, int) and get_origin(t) in (list, tuple, set, frozenset):
            t = get_args(t)[0]
        else:
            return None
    t = _bare(t)
    return get_args(t) if get_origin(t) is Literal else None


def _bare(t: Any) -> Any:
    """t without Annotated metadata, and X for X | None."""
    while True:
        origin = get_origin(t)
        if origin is Annotated:
            t = get_args(t)[0]
        elif (
            origin in (Union, types.UnionType)
            and len(kept := [a for a in get_args(t) if a is not NoneType]) == 1
        ):
            t = kept[0]
        else:
            return t
