"""Built-in rule sets, switched on by name in a rules file: ``use = ["secrets"]``.

``secrets`` (docs/governance.md (section Masking at ingest) lists each rule's false positives):

* ``api_keys``: API keys of common shapes: ``sk-...`` (the Smooth key's shape as its docs
  show it, and OpenAI's and Anthropic's), Stripe (``sk_live_``, ``rk_test_``...), AWS access
  key ids (``AKIA...``), GitHub (``ghp_``, ``github_pat_``...), GitLab (``glpat-``), Slack
  (``xoxb-``...), Google (``AIza...``).
* ``smooth_api_key``: the archiver's own key (``CIRCLEMIND_API_KEY``), by its exact value,
  whatever its shape (only when that variable is set).
* ``bearer_tokens``: ``Bearer <token>``, and ``Authorization: Basic <credentials>``.
* ``jwts``: JSON Web Tokens (``eyJ...`` header, payload and signature).
* ``card_numbers``: 13 to 19 digits, optionally grouped by spaces or dashes, that pass the
  Luhn checksum.
* ``password_inputs``: what a ``browser_action`` typed into a field that looks like a
  password field (:func:`password_inputs`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from archiver.config import ENV_API_KEY
from archiver.masking.rules import Rule

ORIGIN = "builtin:secrets"

_API_KEYS = (
    r"\bsk-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_]{16,}"
    r"|\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
    r"|\bgh[pousr]_[A-Za-z0-9]{36,}"
    r"|\bgithub_pat_[A-Za-z0-9_]{22,}"
    r"|\bglpat-[A-Za-z0-9_-]{20,}"
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"
    r"|\bAIza[0-9A-Za-z_-]{35}"
)
#: ``Bearer <token>`` anywhere; Basic credentials only after ``Authorization:`` (else
#: "basic understanding" would match).
_BEARER = (
    r"(?i:\bbearer\s+[A-Za-z0-9._~+/-]{16,}=*"
    r"|\bauthorization:\s*basic\s+[A-Za-z0-9+/]{8,}={0,2})"
)
_JWT = r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
#: 4-4-4-4 (up to 19 digits), Amex's 4-6-5, or 13-19 digits in a row; never part of a
#: longer run of digits. The optional tail is lazy, so "4111 1111 1111 1111 12" is tried as
#: the 16 digits first.
_CARD = (
    r"(?<![\d-])(?:\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}(?:[ -]?\d{1,3})??"
    r"|\d{4}[ -]?\d{6}[ -]?\d{5}|\d{13,19})(?!\d)"
)

#: Where a browser action names its target field (the heuristic reads these keys of
#: the payload's ``input``).
TARGET_KEYS = ("selector", "field", "label", "name", "placeholder", "target", "element")
#: What a browser action typed (replaced whole).
TYPED_KEYS = ("text", "value", "keys")
_PASSWORD_FIELD = re.compile(
    r"(?i)pass(?:word|wd|phrase|code)|\bpwd\b|\bpin\b|secret|\botp\b|one[-_ ]?time|\bcvc\b|\bcvv\b"
)


def luhn_ok(match: str) -> bool:
    """Whether the digits of ``match`` pass the Luhn checksum (card numbers do)."""
    digits = [int(c) for c in match if c.isdecimal()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2:
            digit *= 2
            digit -= 9 if digit > 9 else 0
        total += digit
    return total % 10 == 0


def looks_like_password_field(field: Any) -> bool:
    """The heuristic: a ``browser_action`` input whose ``type`` is ``password``, or one of
    whose :data:`TARGET_KEYS` holds a text naming a password, passphrase, PIN, one-time
    code, secret or card security code (``#password``, ``input[name=pwd]``,
    ``Enter your PIN``)."""
    if not isinstance(field, dict):
        return False
    if str(field.get("type", "")).lower() == "password":
        return True
    for key in TARGET_KEYS:
        value = field.get(key)
        if isinstance(value, str) and _PASSWORD_FIELD.search(value):
            return True
    return False


def password_inputs(payload: Any, token: Callable[[Any], str]) -> Any:
    """A ``browser_action`` payload (``{name, input}``) with what was typed into a
    password-looking field (:func:`looks_like_password_field`) replaced whole."""
    if not isinstance(payload, dict):
        return payload
    field = payload.get("input")
    if not looks_like_password_field(field):
        return payload
    assert isinstance(field, dict)
    typed = {key: token(field[key]) for key in TYPED_KEYS if key in field}
    if not typed:
        return payload
    return {**payload, "input": {**field, **typed}}


def secrets() -> list[Rule]:
    """The ``secrets`` set, with the archiver's own key as it is set now."""
    rules = [
        Rule("api_keys", re.compile(_API_KEYS), origin=ORIGIN),
        Rule("bearer_tokens", re.compile(_BEARER), origin=ORIGIN),
        Rule("jwts", re.compile(_JWT), origin=ORIGIN),
        Rule("card_numbers", re.compile(_CARD), accept=luhn_ok, origin=ORIGIN),
        Rule(
            "password_inputs",
            where="events",
            event="browser_action",
            whole=password_inputs,
            origin=ORIGIN,
        ),
    ]
    own_key = os.environ.get(ENV_API_KEY, "").strip()
    if own_key:
        rules.insert(0, Rule("smooth_api_key", re.compile(re.escape(own_key)), origin=ORIGIN))
    return rules


def builtin_set(name: str) -> list[Rule] | None:
    """The rules of the built-in set ``name``, or None when there is no such set."""
    return secrets() if name == "secrets" else None
