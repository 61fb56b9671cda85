"""Secret scrubbing: keys and presigned signatures masked wherever they appear."""

from __future__ import annotations

from archiver.redact import REDACTED, redact


def test_a_key_is_masked_wherever_it_appears_even_inside_other_text() -> None:
    """A key is masked inside URLs, JSON and run-together text alike."""
    key = "sk-live-7Qx9ZpL2mN4vR8tYc3Wd"
    text = f'apikey={key}&x {{"apikey": "{key}"}} prefix{key}suffix'
    masked = redact(text, [key])
    assert key not in masked and masked.count(REDACTED) == 3


def test_even_a_very_short_key_is_never_shown_readability_comes_second() -> None:
    """A one-letter key is masked inside words too: the key never appearing comes first."""
    assert redact("backfill k", ["k"]) == f"bac{REDACTED}fill {REDACTED}"


def test_presigned_query_strings_are_masked_without_any_secret_given() -> None:
    """A link's query string (where its signature lives) never survives."""
    masked = redact("GET https://host/rec.mp4?X-Amz-Signature=abc failed", [])
    assert masked == f"GET https://host/rec.mp4?{REDACTED} failed"
