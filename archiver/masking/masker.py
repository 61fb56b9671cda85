"""Applying masking rules to what the API sent, before anything is stored, keyed, logged
or counted (docs/governance.md (section Masking at ingest)).

:class:`Masker` rewrites a :class:`~archiver.models.TaskInfo` (every string and object key
of its output and payload but the task id, its events' payloads and unknown fields) and
plain texts (error messages, log lines, artifact source URLs). A value no rule touches
comes back as the same object, after one search per string; values are walked without
recursion, so nesting as deep as the archive keeps (10,000 levels) is masked too.

Replacements are ``[masked:NAME]``, or ``[hash:NAME:<16 hex>]`` (HMAC-SHA256 keyed by
``ARCHIVER_MASK_KEY``) for ``replace = "hash"``. Replacements already in a text are never
matched again, so masking is idempotent: ``archiver mask --apply`` may run any number of
times. Object keys that become equal after masking are all kept: the second gets ``#2``
appended, the third ``#3``, and so on.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from typing import Any

from archiver.jsonvalues import canonical_bytes, map_strings
from archiver.masking.rules import Rule
from archiver.models import TaskEvent, TaskInfo

#: A replacement as this module writes it (never matched again).
TOKEN = re.compile(
    r"\[(?:masked:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"
    r"|hash:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}:[0-9a-f]{16})\]"
)
#: The text fields of a task's payload (the id is never masked).
TEXT_FIELDS = ("status", "device", "live_url", "recording_url", "downloads_url")
#: Pattern sources that cannot be joined into one alternation without changing their
#: meaning: backreferences and conditionals (group numbers shift), verbose mode (a comment
#: would swallow the closing parenthesis).
_NOT_JOINABLE = re.compile(r"\\[1-9]|\\g<|\(\?P=|\(\?\(|\(\?[aiLmsu-]*x")
_LEADING_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")

Search = Callable[[str], object]


def _prefilter(rules: Sequence[Rule]) -> Search | None:
    """One search that finds something wherever any of ``rules`` would: their patterns
    joined into one alternation (one regex search per string instead of one per rule),
    those that cannot be joined searched on their own."""
    if not rules:
        return None
    patterns = [r.pattern for r in rules if r.pattern is not None]
    joinable = [p.pattern for p in patterns if not _NOT_JOINABLE.search(p.pattern)]
    searches: list[Search] = [p.search for p in patterns if _NOT_JOINABLE.search(p.pattern)]
    if joinable:
        try:
            joined = re.compile("|".join(f"(?:{_scoped(p)})" for p in joinable))
        except re.error:  # flags that cannot be scoped: each pattern on its own
            searches = [p.search for p in patterns]
        else:
            searches.insert(0, joined.search)
    if len(searches) == 1:
        return searches[0]
    return lambda text: any(search(text) is not None for search in searches) or None


def _scoped(source: str) -> str:
    """A pattern's leading global flags ``(?i)`` as a scoped group ``(?i:...)``, which an
    alternation may hold."""
    found = _LEADING_FLAGS.match(source)
    if found is None:
        return source
    return f"(?{found.group(1)}:{source[found.end() :]})"


class _Scope:
    """The rules that apply to one kind of value (a task's fields, its output, events of
    one name, texts)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.text_rules = tuple(r for r in rules if r.text_rule)
        self.whole_rules = tuple(r for r in rules if r.whole is not None)
        self.search = _prefilter(self.text_rules)

    @property
    def empty(self) -> bool:
        return not self.text_rules and not self.whole_rules


def _applies_to_events(rule: Rule, name: str | None) -> bool:
    return rule.where in ("all", "events") and rule.event in (None, name)


class Masker:
    """The rules of a rules file, ready to apply (see the module docstring)."""

    def __init__(self, rules: Sequence[Rule], *, key: bytes | None = None) -> None:
        self.rules = tuple(rules)
        self._key = key
        payload_wide = [r for r in rules if r.where == "all" and r.event is None]
        self._fields = _Scope([r for r in payload_wide if r.text_rule])
        self._output = _Scope(
            [r for r in rules if r.where in ("all", "output") and r.event is None]
        )
        self._text = _Scope([r for r in rules if r.text_rule])
        named = {r.event for r in rules if r.event is not None}
        self._events = {
            name: _Scope([r for r in rules if _applies_to_events(r, name)]) for name in named
        }
        self._any_event = _Scope([r for r in rules if _applies_to_events(r, None)])
        # An event's unknown fields: its text rules, never a path (paths are the payload's).
        self._extras = {name: _Scope(scope.text_rules) for name, scope in self._events.items()}
        self._any_extra = _Scope(self._any_event.text_rules)
        self._order = {rule.name: index for index, rule in enumerate(self.rules)}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(rule.name for rule in self.rules)

    def fired(self, names: set[str]) -> tuple[str, ...]:
        """Rule names in the order of the rules."""
        return tuple(sorted(names, key=self._order.__getitem__))

    # -- replacements ------------------------------------------------------------------

    def token(self, rule: Rule, value: Any) -> str:
        """What replaces ``value`` (a match, or a whole value) for ``rule``."""
        if rule.replace == "mask" or self._key is None:
            return f"[masked:{rule.name}]"
        data = (
            value.encode("utf-8", "surrogatepass")
            if isinstance(value, str)
            else canonical_bytes(value)
        )
        digest = hmac.new(self._key, data, hashlib.sha256).hexdigest()[:16]
        return f"[hash:{rule.name}:{digest}]"

    def _apply(self, text: str, rules: Sequence[Rule], fired: set[str]) -> str:
        """``text`` with every match of ``rules`` replaced, earlier rules first; what a
        rule wrote (or a replacement already there) is never matched by a later one."""
        pieces = _split_tokens(text)
        changed = False
        for rule in rules:
            pattern, accept = rule.pattern, rule.accept
            assert pattern is not None
            out: list[tuple[str, bool]] = []
            for piece, done in pieces:
                if done or pattern.search(piece) is None:
                    out.append((piece, done))
                    continue
                pos = 0
                for match in pattern.finditer(piece):
                    found = match.group()
                    if not found or (accept is not None and not accept(found)):
                        continue
                    out += [(piece[pos : match.start()], False), (self.token(rule, found), True)]
                    pos = match.end()
                    fired.add(rule.name)
                    changed = True
                out.append((piece[pos:], False))
            pieces = out
        return "".join(piece for piece, _ in pieces) if changed else text

    def _string(self, text: str, scope: _Scope, fired: set[str]) -> str:
        if scope.search is None or scope.search(text) is None:
            return text
        return self._apply(text, scope.text_rules, fired)

    def _value(self, value: Any, scope: _Scope, fired: set[str]) -> Any:
        """A JSON value with the scope's rules applied (the same object if none fired)."""
        for rule in scope.whole_rules:
            assert rule.whole is not None
            value = rule.whole(value, self._whole_token(rule, fired))
        if scope.search is None or not _hit(value, scope.search):
            return value
        rules, found = scope.text_rules, set[str]()
        masked = _rewrite(value, lambda text: self._apply(text, rules, found))
        if not found:  # the search hit, no rule did (a failed Luhn check, a replacement)
            return value
        fired.update(found)
        return masked

    def _whole_token(self, rule: Rule, fired: set[str]) -> Callable[[Any], Any]:
        def replace(old: Any) -> Any:
            if isinstance(old, str) and TOKEN.fullmatch(old):
                return old  # masked already (mask --apply runs again)
            fired.add(rule.name)
            return self.token(rule, old)

        return replace

    # -- what the engine masks ---------------------------------------------------------

    def text(self, text: str, fired: set[str] | None = None) -> str:
        """A plain text (an error message, a log line, a URL) with every pattern of every
        rule replaced, wherever the rule applies to payloads: a text can quote anything.
        The names of the rules that fired are added to ``fired``."""
        return self._string(text, self._text, set() if fired is None else fired)

    def event(self, event: TaskEvent) -> TaskEvent:
        """The event with its payload and unknown fields masked, and the rules that fired
        in ``masked``; the same event when none did. Its name and id are never masked."""
        scope = self._events.get(event.name, self._any_event)
        if scope.empty:
            return event
        fired: set[str] = set()
        payload = self._value(event.payload, scope, fired)
        extra = event.extra
        if extra is not None:
            extra = self._value(extra, self._extras.get(event.name, self._any_extra), fired)
        if not fired:
            return event
        return event._replace(payload=payload, extra=extra, masked=self.fired(fired))

    def task(self, task: TaskInfo, *, events: bool = True) -> TaskInfo:
        """The task with everything but its id masked, its events too (``events``), and
        the rules that fired on its own fields in ``masked_rules``; the same object when
        no rule fired. The artifact links as sent stay readable by the fetcher
        (``TaskInfo.artifact_link``)."""
        fired: set[str] = set()
        fields = task.__dict__
        changes: dict[str, Any] = {}
        if self._fields.search is not None:
            for name in TEXT_FIELDS:
                value = fields[name]
                if (
                    value is not None
                    and (new := self._string(value, self._fields, fired)) is not value
                ):
                    changes[name] = new
        output = self._value(task.output, self._output, fired)
        if output is not task.output:
            changes["output"] = output
        extra = task.__pydantic_extra__
        masked_extra = self._value(extra, self._fields, fired) if extra else extra
        if extra is not masked_extra:
            changes["__pydantic_extra__"] = masked_extra
        if events and task.events:
            masked_events = [self.event(ev) for ev in task.events]
            if any(new is not old for new, old in zip(masked_events, task.events, strict=True)):
                changes["events"] = masked_events
        return self._copy(task, changes, fired) if changes else task

    def _copy(self, task: TaskInfo, changes: dict[str, Any], fired: set[str]) -> TaskInfo:
        copy = task.__copy__()
        extra = changes.pop("__pydantic_extra__", copy.__pydantic_extra__)
        copy.__dict__.update(changes)
        copy.__pydantic_extra__ = extra
        copy._masked_rules = self.fired(fired)
        if "recording_url" in changes or "downloads_url" in changes:
            copy._links = {kind: task.artifact_link(kind) for kind in ("recording", "downloads")}
        return copy


def _split_tokens(text: str) -> list[tuple[str, bool]]:
    """``text`` as (piece, is a replacement) pieces."""
    if "[" not in text:
        return [(text, False)]
    pieces: list[tuple[str, bool]] = []
    pos = 0
    for match in TOKEN.finditer(text):
        pieces += [(text[pos : match.start()], False), (match.group(), True)]
        pos = match.end()
    pieces.append((text[pos:], False))
    return pieces


def _hit(value: Any, search: Search) -> bool:
    """Whether ``search`` finds something in any string or key inside ``value`` (the
    common case, nothing, costs one search per string: this runs for every event)."""
    stack = [value]
    push, pop = stack.append, stack.pop
    while stack:
        item = pop()
        kind = type(item)
        if kind is dict:
            for key, member in item.items():
                if search(key) is not None:
                    return True
                push(member)
        elif kind is list:
            stack.extend(item)
        elif kind is str:
            if search(item) is not None:
                return True
        elif isinstance(item, str | dict | list):  # a subclass: the general way
            push(_plain(item))
    return False


def _plain(item: str | dict[str, Any] | list[Any]) -> Any:
    if isinstance(item, str):
        return str(item)
    return dict(item) if isinstance(item, dict) else list(item)


def _rewrite(value: Any, mask: Callable[[str], str]) -> Any:
    """A copy of ``value`` with ``mask`` applied to every string and key (no recursion)."""
    return map_strings(value, mask, lambda obj: _masked_keys(obj, mask))


def _masked_keys(obj: dict[str, Any], mask: Callable[[str], str]) -> dict[str, Any]:
    """``obj`` with its keys masked; keys that become equal are all kept, numbered
    (``[masked:emails]``, ``[masked:emails]#2``, ...), an unmasked key keeping its name."""
    out: dict[str, Any] = {}
    renamed: list[tuple[str, Any]] = []
    for key, member in obj.items():
        new = mask(key)
        if new is key:
            out[key] = member
        else:
            renamed.append((new, member))
    for new, member in renamed:
        name, number = new, 2
        while name in out:
            name, number = f"{new}#{number}", number + 1
        out[name] = member
    return out
