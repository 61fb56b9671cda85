"""A de-duplicating memory of task ids whose size does not grow with the archive."""

from __future__ import annotations

from collections.abc import Iterable


class RecentIds:
    """The last ``keep`` ids added, plus pinned ids kept for good.

    A backfill's listing meets an id twice only where a page re-reads the boundary of the
    page before (or re-reads a tie group in one bigger page), so remembering the last few
    pages de-duplicates it with memory flat in the number of tasks (a set of every id
    listed grew by about 10 MB per 100,000 tasks). The tasks an interrupted backfill left
    unfinished are enqueued first and may be listed anywhere later: those are pinned.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._recent: dict[str, None] = {}  # insertion-ordered: the oldest goes first
        self._pinned: set[str] = set()

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._recent or task_id in self._pinned

    def __len__(self) -> int:
        return len(self._recent) + len(self._pinned)

    def update(self, task_ids: Iterable[str]) -> None:
        for task_id in task_ids:
            self._recent.pop(task_id, None)
            self._recent[task_id] = None
        while len(self._recent) > self.keep:
            del self._recent[next(iter(self._recent))]

    def pin(self, task_ids: Iterable[str]) -> None:
        self._pinned.update(task_ids)
