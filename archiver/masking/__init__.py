"""Masking at ingest: secrets and personal data replaced before anything is written.

* :mod:`~archiver.masking.rules`: the rules file (``--mask-rules``, TOML), checked;
* :mod:`~archiver.masking.builtin`: the built-in set ``secrets``;
* :mod:`~archiver.masking.masker`: :class:`Masker`, applying rules to what the API sent;
* :mod:`~archiver.masking.archive`: ``archiver mask --apply``, the rules applied to what
  is already archived.

docs/governance.md (section Masking at ingest) describes the rules and what they cost.
"""

from __future__ import annotations

import os

from archiver.config import ENV_MASK_KEY
from archiver.exceptions import ConfigError
from archiver.masking.builtin import builtin_set
from archiver.masking.masker import Masker
from archiver.masking.rules import MIN_KEY_CHARS, Rule, parse_rules, read_rules_file

__all__ = ["Masker", "Rule", "load_masker"]


def load_masker(path: str | None) -> Masker | None:
    """The masker of the rules file at ``path`` (None: no file, or a file without rules);
    ConfigError (exit 2) for anything wrong with it, or for ``replace = "hash"`` without
    a usable ``ARCHIVER_MASK_KEY``."""
    if not path:
        return None
    rules = parse_rules(read_rules_file(path), path, builtin=builtin_set)
    if not rules:
        return None
    key = None
    hashing = [rule.name for rule in rules if rule.replace == "hash"]
    if hashing:
        value = os.environ.get(ENV_MASK_KEY, "")
        if len(value) < MIN_KEY_CHARS:
            state = "is not set" if not value else f"is shorter than {MIN_KEY_CHARS} characters"
            raise ConfigError(
                f'mask rules {path}: rule {hashing[0]!r} has replace = "hash" but '
                f"{ENV_MASK_KEY} {state}: export a secret of {MIN_KEY_CHARS} characters or "
                'more (hashes are HMAC-SHA256 keyed by it), or use replace = "mask".'
            )
        key = value.encode("utf-8", "surrogatepass")
    return Masker(rules, key=key)
