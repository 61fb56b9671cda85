"""RecentIds: the backfill's de-duplication memory stays bounded yet never forgets pins."""

from __future__ import annotations

from archiver.recent import RecentIds


def test_recent_ids_forget_the_oldest_beyond_keep_but_keep_pins() -> None:
    """Only the last ``keep`` added ids are remembered; pinned ids stay whatever is added."""
    seen = RecentIds(keep=3)
    seen.pin(["p1"])
    seen.update(["a", "b", "c"])
    assert "a" in seen and "p1" in seen
    seen.update(["d"])
    assert "a" not in seen
    assert {"b", "c", "d", "p1"} == {i for i in ["a", "b", "c", "d", "p1"] if i in seen}
    seen.update([f"x{i}" for i in range(100)])
    assert "p1" in seen and "b" not in seen and len(seen) == 4


def test_re_adding_an_id_makes_it_recent_again() -> None:
    """An id listed again (a boundary re-read) moves to the young end of the window."""
    seen = RecentIds(keep=2)
    seen.update(["a", "b"])
    seen.update(["a", "c"])
    assert "a" in seen and "c" in seen and "b" not in seen
