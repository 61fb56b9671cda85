"""Secret scrubbing: keys and presigned signatures masked, the rest of the text readable."""

from __future__ import annotations

from archiver.redact import REDACTED, redact


def test_a_key_is_masked_wherever_it_appears_even_inside_other_text() -> None:
    """A key of ordinary length is masked inside URLs, JSON and run-together text alike."""
    key = "sk-live-7Qx9ZpL2mN4vR8tYc3Wd"
    text = f'apikey={key}&x {{"apikey": "{key}"}} prefix{key}suffix'
    masked = redact(text, [key])
    assert key not in masked and masked.count(REDACTED) == 3


def test_a_very_short_key_is_masked_where_it_stands_alone_not_inside_every_word() -> None:
    """A one-letter key leaves words such as 'backfill' whole, yet is masked as a value."""
    masked = redact('backfill done: apikey=k&l=5, "k", key k.', ["k"])
    assert masked == (f'backfill done: apikey={REDACTED}&l=5, "{REDACTED}", key {REDACTED}.')


def test_presigned_query_strings_are_masked_without_any_secret_given() -> None:
    """A link's query string (where its signature lives) never survives."""
    masked = redact("GET https://host/rec.mp4?X-Amz-Signature=abc failed", [])
    assert masked == f"GET https://host/rec.mp4?{REDACTED} failed"
