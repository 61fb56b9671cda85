"""Any JSON the API sends: parsed, serialised canonically and stored without loss.

Three things the fast libraries refuse are ordinary in what scraping agents return: lone
UTF-16 surrogates (``"\\ud83d"``, what ``JSON.stringify`` emits for a string cut inside an
emoji), ``\\u0000`` in strings and keys, and deep nesting. Numbers must also stay as sent
(``1`` vs ``1.0``, ``-0.0``, ``1e308``, ``10**40``). This module is the one place that
knows how:

* :func:`loads_json` parses any JSON text nested up to :data:`MAX_DEPTH` levels.

Nothing here recurses on a value's depth, and nothing changes the interpreter's recursion
limit (it is one for all threads: raising and lowering it while another thread is deep
inside a C serialiser kills the process). Deep documents go to an iterative parser and
iterative writers instead.
* :func:`dumps_json` is the canonical text (sorted keys, compact) used for event keys; it
  never fails on a parsed value. :func:`storage_json` is the same text with lone
  surrogates escaped, so every database and UTF-8 codec takes it.
* :func:`column_values` splits a value into what the typed JSON column holds and, when
  that column cannot give the exact value back, the JSON text for the ``*_raw`` column.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

#: Nesting the parser accepts (PostgreSQL's jsonb takes 11,000 at its default
#: max_stack_depth of 2MB). Deeper bodies are refused as malformed, never half-read.
MAX_DEPTH = 10_000

#: What replaces a character a column cannot hold (lone surrogates; NUL on PostgreSQL).
REPLACEMENT = "\ufffd"

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

#: Every digit as "0", so that a run of digits is a run of "0"s (bytes.translate is C).
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
#: 19 digits in a row: the shortest run that can be an integer outside orjson's exact
#: range (-2**63 to 2**64 - 1), which it would return as a float.
_LONG_DIGIT_RUN = b"0" * 19


def loads_json(raw: str | bytes) -> Any:
    """Parse a JSON text exactly as sent (ints stay ints, big ones too; lone surrogates and
    NUL kept). Raises ValueError on invalid JSON (NaN and Infinity included),
    RecursionError when nested deeper than MAX_DEPTH levels.

    Bytes (every API body) go to orjson first, 2-3x faster than the standard library,
    when they hold no run of 19 digits: orjson returns exactly what ``json.loads``
    returns except for integers beyond 64 bits (floats) and for what it refuses (lone
    surrogates, NaN, 1e400, a BOM, nesting past 1024, non-UTF-8), which the standard
    library then decides, as before (tests/test_lossless.py compares the two).
    """
    if isinstance(raw, bytes) and raw.translate(_DIGITS_AS_ZERO).find(_LONG_DIGIT_RUN) < 0:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        pass  # deeper than the standard library's recursive parser reaches from here
    return _loads_iterative(_json_text(raw))


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259) and no column could give them back.
    raise ValueError(f"{name} is not a JSON value")


# --- deep documents, without recursion --------------------------------------------------

_skip_space = json.decoder.WHITESPACE.match  # type: ignore[attr-defined]
_match_number = json.scanner.NUMBER_RE.match  # type: ignore[attr-defined]
#: The standard library's string scanner (its C version): strings read exactly as json.loads.
_scan_string: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_WORDS = (("null", None), ("true", True), ("false", False))
_SPACE = frozenset(" \t\n\r")


def _json_text(raw: str | bytes) -> str:
    """The text json.loads would parse: bytes decoded as it decodes them, a BOM refused."""
    if isinstance(raw, bytes | bytearray):
        return raw.decode(json.detect_encoding(raw), "surrogatepass")
    if raw.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", raw, 0)
    return raw


def _scalar(text: str, idx: int) -> tuple[Any, int]:
    """The string, number or literal at ``idx`` and where it ends (json.scanner's rules)."""
    char = text[idx : idx + 1]
    if char == '"':
        return _scan_string(text, idx + 1, True)
    for word, value in _WORDS:
        if text.startswith(word, idx):
            return value, idx + len(word)
    number = _match_number(text, idx)
    if number is not None:
        integer, frac, exp = number.groups()
        if frac or exp:
            return float(integer + (frac or "") + (exp or "")), number.end()
        return int(integer), number.end()
    for constant in ("NaN", "Infinity", "-Infinity"):
        if text.startswith(constant, idx):
            _refuse_constant(constant)
    raise json.JSONDecodeError("Expecting value", text, idx)


def _key(text: str, idx: int) -> tuple[str, int]:
    """An object's key at ``idx`` (which must open a string) and where its value starts."""
    if text[idx : idx + 1] != '"':
        raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, idx)
    key, idx = _scan_string(text, idx + 1, True)
    idx = _skip_space(text, idx).end()
    if text[idx : idx + 1] != ":":
        raise json.JSONDecodeError("Expecting ':' delimiter", text, idx)
    return key, _skip_space(text, idx + 1).end()


#: What :func:`_open` returns for a container whose members are read next.
_OPENED = object()


def _open(text: str, idx: int, open_: list[Any], keys: list[str]) -> tuple[Any, int]:
    """At an opening bracket: (an empty container, its end), or (_OPENED, where its first
    member starts) with the container pushed onto ``open_`` (and its first key on ``keys``)."""
    if len(open_) >= MAX_DEPTH:
        raise RecursionError(f"JSON nested deeper than {MAX_DEPTH:,} levels")
    char = text[idx]
    idx += 1
    if text[idx : idx + 1] in _SPACE:
        idx = _skip_space(text, idx).end()
    if text[idx : idx + 1] == ("]" if char == "[" else "}"):
        return ([] if char == "[" else {}), idx + 1
    if char == "[":
        open_.append([])
        return _OPENED, idx
    key, idx = _key(text, idx)
    open_.append({})
    keys.append(key)
    return _OPENED, idx


def _place(text: str, idx: int, value: Any, open_: list[Any], keys: list[str]) -> tuple[Any, int]:
    """A value just read: added to its container, closing those that end here. Returns
    (_OPENED, where the next member starts), or (the document, its end) when it is whole."""
    while open_:
        top = open_[-1]
        if text[idx : idx + 1] in _SPACE:  # compact text (the usual) skips the regex
            idx = _skip_space(text, idx).end()
        sep = text[idx : idx + 1]
        if type(top) is list:
            top.append(value)
            close = "]"
        else:
            top[keys.pop()] = value
            close = "}"
        if sep == ",":
            idx += 1
            if text[idx : idx + 1] in _SPACE:
                idx = _skip_space(text, idx).end()
            if close == "}":
                key, idx = _key(text, idx)
                keys.append(key)
            return _OPENED, idx
        if sep != close:
            raise json.JSONDecodeError("Expecting ',' delimiter", text, idx)
        idx += 1
        value = open_.pop()
    return value, idx


def _loads_iterative(text: str) -> Any:
    """json.loads (no hooks) with an explicit stack instead of recursion: the same values,
    a ValueError where it raises one, RecursionError past MAX_DEPTH levels."""
    open_: list[Any] = []  # the arrays and objects being read, innermost last
    keys: list[str] = []  # the key of the member being read, per open object
    idx = _skip_space(text, 0).end()
    while True:
        if text[idx : idx + 1] in ("[", "{"):
            value, idx = _open(text, idx, open_, keys)
            if value is _OPENED:
                continue
        else:
            value, idx = _scalar(text, idx)
        value, idx = _place(text, idx, value, open_, keys)
        if value is not _OPENED:
            end = _skip_space(text, idx).end()
            if end != len(text):
                raise json.JSONDecodeError("Extra data", text, end)
            return value


def dumps_json(value: Any) -> str:
    """Compact JSON with sorted keys: the canonical text, hashed for event keys.

    orjson where it can (several times faster on the hot path of every poll); otherwise
    (integers beyond 64 bits, lone surrogates, nesting deeper than 254) the same text the
    standard library's ``json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`` gives, built without recursion so no depth is too deep. Lone
    surrogates stay raw characters here: hash it as UTF-8 with ``surrogatepass``.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return _dumps_iterative(value)


def canonical_bytes(value: Any) -> bytes:
    """:func:`dumps_json` as UTF-8 (lone surrogates with ``surrogatepass``), what event
    keys hash; orjson's bytes as they come where it can (no decode and re-encode)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return _dumps_iterative(value).encode("utf-8", "surrogatepass")


def storage_json(value: Any) -> str:
    """:func:`dumps_json` with lone surrogates written as ``\\udXXX`` escapes: valid UTF-8
    that parses back to the same value (the ``json_serializer`` of both databases)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return escape_surrogates(_dumps_iterative(value))


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone UTF-16 surrogate (which no UTF-8 codec takes)."""
    return not text.isascii() and _LONE_SURROGATE.search(text) is not None


def escape_surrogates(text: str) -> str:
    """Canonical JSON text with each raw lone surrogate as its ``\\uXXXX`` escape (inside
    JSON text a surrogate can only be part of a string, where the escape means the same)."""
    if not _LONE_SURROGATE.search(text):
        return text
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class _Token(str):
    """Structure on the writer's stack: a bracket or a comma (a newline follows an opening
    one or a comma, and precedes a closing one, when indenting)."""


class _Literal(str):
    """Text on the writer's stack written as it is (an object's key and its colon)."""


_encode_string: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]
_OPEN_LIST, _OPEN_DICT, _COMMA = _Token("["), _Token("{"), _Token(",")
_CLOSE_LIST, _CLOSE_DICT = _Token("]"), _Token("}")


def _dumps_iterative(value: Any) -> str:
    return "".join(iter_json(value, sort_keys=True))


def iter_json(value: Any, *, sort_keys: bool = False, indent: int | None = None) -> Iterator[str]:
    """The JSON text of ``value`` in pieces, without recursion, so no depth is too deep:
    ``json.dumps(value, ensure_ascii=False, sort_keys=..., indent=...)`` (compact
    separators when ``indent`` is None). Lazy: a reader that stops early (a preview) never
    pays for the rest, and indentation is only built for what is read."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is _Token:
            yield item if indent is None else _indented(item, depth, indent)
        elif kind is _Literal:
            yield item
        elif isinstance(item, list | tuple):
            if not item:
                yield "[]"
                continue
            stack.append((_CLOSE_LIST, depth))
            for index in range(len(item) - 1, -1, -1):
                stack.append((item[index], depth + 1))
                stack.append((_COMMA if index else _OPEN_LIST, depth + 1))
        elif isinstance(item, dict):
            if not item:
                yield "{}"
                continue
            _push_object(item, depth, stack, sort_keys, indent is not None)
        else:
            yield _scalar_text(item)


def _indented(token: str, depth: int, indent: int) -> str:
    """A bracket or comma with the newline and indentation that go with it."""
    if token in ("]", "}"):
        return "\n" + " " * (indent * depth) + token
    return token + "\n" + " " * (indent * depth)


def _scalar_text(item: Any) -> str:
    if isinstance(item, str):
        return _encode_string(item)
    if item is None:
        return "null"
    if item is True:
        return "true"
    if item is False:
        return "false"
    if isinstance(item, int):
        return int.__repr__(item)
    if isinstance(item, float):
        return _float_text(item)
    raise TypeError(f"{type(item).__name__} is not a JSON value")


def _push_object(
    item: dict[Any, Any],
    depth: int,
    stack: list[tuple[Any, int]],
    sort_keys: bool,
    spaced: bool,
) -> None:
    """Its members onto the stack, last first: closing brace, then per member its value,
    its key and colon, and the opening brace or comma before it."""
    stack.append((_CLOSE_DICT, depth))
    pairs = sorted(item.items()) if sort_keys else list(item.items())
    colon = ": " if spaced else ":"
    for index in range(len(pairs) - 1, -1, -1):
        key, member = pairs[index]
        if not isinstance(key, str):
            raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")
        stack.append((member, depth + 1))
        stack.append((_Literal(_encode_string(key) + colon), depth + 1))
        stack.append((_COMMA if index else _OPEN_DICT, depth + 1))


def _float_text(value: float) -> str:
    """As the standard library writes a float (repr; NaN/Infinity as it parses them)."""
    if math.isfinite(value):
        return float.__repr__(value)
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


# --- what the typed column can hold ------------------------------------------------------


def _walk(value: Any) -> Iterator[Any]:
    """Every string, key and number inside ``value``, without recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield from item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            yield item


def _jsonb_float_exact(value: float) -> bool:
    """Whether jsonb gives this float back as the same float.

    jsonb keeps numbers as NUMERIC: no negative zero, no NaN/Infinity, and a number written
    with a positive exponent and no fraction digit left ("1e+16", "1.5e+308") comes back
    as an integer. Python (and orjson) write exactly the floats >= 1e16 that way.
    """
    if not math.isfinite(value):
        return False
    if value == 0.0:
        return math.copysign(1.0, value) > 0
    return "e+" not in float.__repr__(value)


def _float_kept(value: float) -> bool:
    return math.isfinite(value)


@dataclass(frozen=True)
class _Column:
    """What one database's typed JSON column cannot give back exactly."""

    #: Characters it cannot hold in strings and keys (replaced by U+FFFD there).
    bad_text: re.Pattern[str]
    #: Floats it gives back as the same float.
    float_exact: Callable[[float], bool]
    #: Substrings of the canonical text of every value it might not give back exactly,
    #: besides lone surrogates (and of some others): none found proves exactness.
    suspect: tuple[str, ...]


_COLUMNS = {
    # jsonb refuses NUL and lone surrogates and normalises -0.0 and floats written with a
    # positive exponent.
    "postgresql": _Column(
        re.compile("[\\x00\\ud800-\\udfff]"), _jsonb_float_exact, ("\\u0000", "-0.0", "e+")
    ),
    # TEXT holding canonical JSON gives everything back; but SQLite's JSON functions turn
    # an escaped lone surrogate into invalid UTF-8, which breaks readers of json_extract
    # (the task_summary view included), so the typed text is kept free of them.
    "sqlite": _Column(re.compile("[\\ud800-\\udfff]"), _float_kept, ()),
}


def _suspect(canonical: str, column: _Column) -> bool:
    """Whether canonical text may hold something the column cannot give back exactly.
    Substring tests, not a regex: this runs for every event (a regex costs 3x more)."""
    if not canonical.isascii():
        try:
            canonical.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (only the iterative writer keeps them)
            return True
    for part in column.suspect:  # noqa: SIM110 (a loop: any() and its generator cost more)
        if part in canonical:
            return True
    return False


def _column(dialect: str) -> _Column:
    return _COLUMNS.get(dialect, _COLUMNS["postgresql"])


def text_column_value(value: str | None, dialect: str) -> str | None:
    """A string for a plain TEXT column, with the characters ``dialect`` cannot store
    there (the same ones its JSON column cannot) replaced by U+FFFD."""
    if value is None:
        return None
    return _column(dialect).bad_text.sub(REPLACEMENT, value)


def exact_in_column(value: Any, dialect: str) -> tuple[bool, bool]:
    """(exact, bad_text): whether ``dialect``'s typed JSON column gives ``value`` back
    exactly, and whether some string or key holds a character it cannot hold."""
    column = _column(dialect)
    numbers_exact, bad_text = True, False
    for item in _walk(value):
        if isinstance(item, str):
            if not bad_text and column.bad_text.search(item):
                bad_text = True
        elif isinstance(item, float) and not column.float_exact(item):
            numbers_exact = False
    return numbers_exact and not bad_text, bad_text


def replace_bad_text(value: Any, dialect: str) -> Any:
    """A copy of ``value`` with each character ``dialect``'s typed column cannot hold
    replaced by U+FFFD, in strings and keys (keys made equal keep the last member)."""
    fix = _column(dialect).bad_text
    return map_strings(value, lambda text: fix.sub(REPLACEMENT, text))


def map_strings(
    value: Any,
    text: Callable[[str], str],
    keys: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Any:
    """A copy of ``value`` with ``text`` applied to every string, each object rebuilt by
    ``keys`` (by default ``text`` applied to each key, keys made equal keeping the last
    member), without recursion: any depth is fine."""
    rekey = keys or (lambda obj: {text(key): member for key, member in obj.items()})
    root: list[Any] = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        container, slot = stack.pop()
        item = container[slot]
        if isinstance(item, str):
            container[slot] = text(item)
        elif isinstance(item, list):
            copy = list(item)
            container[slot] = copy
            stack.extend((copy, index) for index in range(len(copy)))
        elif isinstance(item, dict):
            copied = rekey(item)
            container[slot] = copied
            stack.extend((copied, key) for key in copied)
    return root[0]


def column_values(value: Any, dialect: str, canonical: str | None = None) -> tuple[Any, str | None]:
    """(typed column value, ``*_raw`` column text or None) for a JSON value.

    The raw text is set only when the typed column, read back, would not be exactly
    ``value``; the typed column then holds the closest value it can (bad characters
    replaced by U+FFFD; numbers as the database normalises them). ``canonical``: any
    canonical text containing ``value`` (e.g. its event key's), so an ordinary value
    costs a few substring searches and no second serialisation.
    """
    column = _column(dialect)
    if value is None or isinstance(value, bool | int):
        return value, None
    if canonical is None and isinstance(value, dict | list):
        canonical = dumps_json(value)
    if canonical is not None and not _suspect(canonical, column):
        return value, None
    exact, bad_text = exact_in_column(value, dialect)
    if exact:
        return value, None
    typed = replace_bad_text(value, dialect) if bad_text else value
    return typed, storage_json(value)


def json_column(dialect: str) -> JsonColumn:
    """What ``dialect``'s typed JSON column holds exactly, for :func:`column_texts`."""
    return JsonColumn(dialect, _column(dialect))


@dataclass(frozen=True)
class JsonColumn:
    dialect: str
    limits: _Column


def column_texts(value: Any, column: JsonColumn) -> tuple[str | None, str | None]:
    """:func:`column_values` with the typed value already serialised as the JSON column
    binds it (:func:`storage_json`), for inserts that bypass the column type.

    The common value costs one orjson serialisation and a few substring searches; anything
    unusual takes the general path.
    """
    if value is None:
        return None, None
    try:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        pass
    else:
        if not _suspect(text, column.limits):
            return text, None
    typed, raw = column_values(value, column.dialect)
    return (None if typed is None else storage_json(typed)), raw
