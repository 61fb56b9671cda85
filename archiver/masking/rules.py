"""Masking rules: what a rules file (``--mask-rules``, ``ARCHIVER_MASK_RULES``) says, read
with the standard library's TOML parser and checked before any request.

A file holds ``[[rule]]`` tables and, optionally, ``use = ["secrets"]`` (built-in rule
sets, :mod:`archiver.masking.builtin`). Anything wrong (TOML syntax, an unknown key, a
value of the wrong type, an invalid regex, a duplicate name, ``replace = "hash"`` without
``ARCHIVER_MASK_KEY``) is one :class:`ConfigError` line naming the file, the rule and what
is wrong: exit 2, before the archive or the API is touched.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archiver.exceptions import ConfigError

WHERE = ("all", "output", "events")
REPLACE = ("mask", "hash")
RULE_KEYS = ("name", "pattern", "where", "event", "path", "replace")
TOP_KEYS = ("rule", "use")
#: A rule's name goes into ``[masked:NAME]``: no brackets, colons or spaces.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
#: The API's statuses: the archiver decides by them, so no rule may rewrite them.
STATUSES = ("waiting", "running", "done", "failed", "cancelled")
MIN_KEY_CHARS = 16

#: ``whole(value, token) -> value``: a rule that replaces whole values inside a JSON value
#: (a path rule, the password heuristic), copying what it changes; ``token(old)`` gives the
#: replacement of one value.
WholeValues = Callable[[Any, Callable[[Any], str]], Any]


@dataclass(frozen=True)
class Rule:
    """One masking rule, checked."""

    name: str
    #: What is replaced in strings and keys (with ``path``/``whole``: which values qualify).
    pattern: re.Pattern[str] | None = None
    where: str = "all"
    #: Only events of this name (``where`` all or events).
    event: str | None = None
    #: The dotted path of the whole value to replace (a path rule), as written.
    path: str | None = None
    replace: str = "mask"
    #: Built-in rules: a further check of each match (the Luhn checksum of card numbers).
    accept: Callable[[str], bool] | None = None
    #: Whole values replaced (path rules and built-in field rules).
    whole: WholeValues | None = None
    #: Where it came from: a file or ``builtin:secrets``.
    origin: str = ""

    @property
    def text_rule(self) -> bool:
        """Whether it masks matches inside strings (as opposed to whole values)."""
        return self.pattern is not None and self.whole is None


# --- reading a rules file ------------------------------------------------------------


def read_rules_file(path: str) -> dict[str, Any]:
    """The parsed TOML of a rules file; ConfigError naming it when it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"mask rules {path}: no such file; check --mask-rules / ARCHIVER_MASK_RULES."
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"mask rules {path}: cannot be read ({exc.strerror or exc}); check "
            "--mask-rules / ARCHIVER_MASK_RULES."
        ) from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"mask rules {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8."
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"mask rules {path}: not valid TOML: {exc}; fix the file.") from None


def _suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def parse_rules(
    document: Mapping[str, Any],
    origin: str,
    *,
    builtin: Callable[[str], list[Rule] | None],
) -> list[Rule]:
    """The rules of a parsed rules file: the built-in sets of ``use`` first, then the
    file's ``[[rule]]`` tables in order. ``builtin(name)`` gives a set's rules (None: no
    such set)."""
    for key in document:
        if key not in TOP_KEYS:
            raise ConfigError(
                f"mask rules {origin}: unknown top-level key {key!r}; "
                f"{_suggest(key, TOP_KEYS)}expected [[rule]] tables and use = [...]."
            )
    rules: list[Rule] = []
    use = document.get("use", [])
    if not isinstance(use, list) or not all(isinstance(name, str) for name in use):
        raise ConfigError(
            f'mask rules {origin}: use must be a list of rule set names, e.g. use = ["secrets"].'
        )
    for set_name in use:
        found = builtin(set_name)
        if found is None:
            raise ConfigError(
                f"mask rules {origin}: use: unknown rule set {set_name!r}; the built-in set "
                'is "secrets".'
            )
        rules += found
    tables = document.get("rule", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(
            f"mask rules {origin}: rule must be an array of tables, written [[rule]]."
        )
    for number, table in enumerate(tables, 1):
        rules.append(_parse_rule(table, origin, number))
    _check_unique(rules, origin)
    return rules


def _label(table: Mapping[str, Any], number: int) -> str:
    name = table.get("name")
    return f"{name!r} (rule #{number})" if isinstance(name, str) else f"#{number}"


def _problem(origin: str, table: Mapping[str, Any], number: int, problem: str) -> ConfigError:
    return ConfigError(f"mask rules {origin}: rule {_label(table, number)}: {problem}")


def _string(table: Mapping[str, Any], key: str, origin: str, number: int) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise _problem(
            origin,
            table,
            number,
            f"{key} must be a string, got {type(value).__name__} {value!r}; quote it.",
        )
    return value


def _parse_rule(table: Mapping[str, Any], origin: str, number: int) -> Rule:
    for key in table:
        if key not in RULE_KEYS:
            raise _problem(
                origin,
                table,
                number,
                f"unknown key {key!r}; {_suggest(key, RULE_KEYS)}a rule takes "
                f"{', '.join(RULE_KEYS)}.",
            )
    name, pattern, where, event, path, replace = (
        _string(table, key, origin, number) for key in RULE_KEYS
    )
    if name is None or not _NAME.fullmatch(name):
        raise _problem(
            origin,
            table,
            number,
            "name is missing or not usable: give 1-64 letters, digits, _ . - "
            '(it is written into "[masked:NAME]").',
        )
    where = where or "all"
    replace = replace or "mask"
    for key, value, allowed in (("where", where, WHERE), ("replace", replace, REPLACE)):
        if value not in allowed:
            raise _problem(
                origin, table, number, f"{key} {value!r} is not one of {', '.join(allowed)}."
            )
    if pattern is None and path is None:
        raise _problem(origin, table, number, "give a pattern, a path, or both.")
    if event is not None and where == "output":
        raise _problem(origin, table, number, 'event only applies to events; use where = "events".')
    compiled = _compile(pattern, origin, table, number) if pattern is not None else None
    whole = _path_rule(path, compiled, origin, table, number) if path is not None else None
    if compiled is not None and whole is None and where == "all" and event is None:
        _check_statuses(compiled, origin, table, number)
    return Rule(
        name=name,
        pattern=compiled,
        where=where,
        event=event,
        path=path,
        replace=replace,
        whole=whole,
        origin=origin,
    )


def _compile(pattern: str, origin: str, table: Mapping[str, Any], number: int) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise _problem(
            origin,
            table,
            number,
            f"pattern {pattern!r} is not a valid regular expression ({exc}); fix it "
            "(Python re syntax).",
        ) from None
    if compiled.fullmatch(""):
        raise _problem(
            origin,
            table,
            number,
            f"pattern {pattern!r} matches the empty string, so it would match everywhere; "
            "make it require at least one character.",
        )
    return compiled


def _check_statuses(
    pattern: re.Pattern[str], origin: str, table: Mapping[str, Any], number: int
) -> None:
    """A rule for the whole payload must leave the task's status alone: the archiver
    decides by it (a masked status would never be final)."""
    for status in STATUSES:
        if pattern.search(status):
            raise _problem(
                origin,
                table,
                number,
                f"pattern matches the task status {status!r}, which the archiver decides by; "
                "make the pattern more specific.",
            )


def _check_unique(rules: Sequence[Rule], origin: str) -> None:
    seen: dict[str, Rule] = {}
    for rule in rules:
        if rule.name in seen:
            first = seen[rule.name]
            where = "a built-in rule of " + first.origin if first.origin != origin else "a rule"
            raise ConfigError(
                f"mask rules {origin}: rule {rule.name!r}: duplicate name ({where} has it); "
                "give each rule its own name."
            )
        seen[rule.name] = rule


# --- path rules --------------------------------------------------------------------------


def _path_rule(
    path: str,
    pattern: re.Pattern[str] | None,
    origin: str,
    table: Mapping[str, Any],
    number: int,
) -> WholeValues:
    segments = tuple(path.split("."))
    if not all(segments) or len(segments) > 64:
        raise _problem(
            origin,
            table,
            number,
            f"path {path!r} is not a dotted path: use keys separated by dots, e.g. "
            '"input.text" (* for any key or array item, a number for an array item).',
        )

    def whole(value: Any, token: Callable[[Any], str]) -> Any:
        def qualifies(found: Any) -> bool:
            return pattern is None or (isinstance(found, str) and bool(pattern.search(found)))

        return replace_at(
            value, segments, 0, lambda found: token(found) if qualifies(found) else found
        )

    return whole


def replace_at(value: Any, path: Sequence[str], depth: int, replace: Callable[[Any], Any]) -> Any:
    """``value`` with ``replace(v)`` for each value ``v`` at ``path`` (from ``depth``),
    containers copied where something changed; the same object when nothing did.
    Recursion is bounded by the path's length (64 segments at most)."""
    if depth == len(path):
        return replace(value)
    segment = path[depth]
    if isinstance(value, dict):
        keys: Sequence[Any] = list(value) if segment == "*" else [segment] * (segment in value)
        changed = {}
        for key in keys:
            new = replace_at(value[key], path, depth + 1, replace)
            if new is not value[key]:
                changed[key] = new
        return {**value, **changed} if changed else value
    if isinstance(value, list):
        if segment == "*":
            indexes: Sequence[int] = range(len(value))
        else:
            indexes = [int(segment)] if segment.isdigit() and int(segment) < len(value) else []
        copy: list[Any] | None = None
        for index in indexes:
            new = replace_at(value[index], path, depth + 1, replace)
            if new is not value[index]:
                copy = copy if copy is not None else list(value)
                copy[index] = new
        return copy if copy is not None else value
    return value
