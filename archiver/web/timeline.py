"""A task page's event timeline, read while the page streams out: a page of
:data:`~archiver.web.queries.EVENTS_PAGE` events in batches of
:data:`~archiver.web.queries.EVENTS_BATCH`, each batch in its own short read, formatted
(payload previews) and sent before the next is read, so a task of large payloads costs
the server a batch of memory, not the page."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from archiver.exceptions import ArchiverError
from archiver.store.database import Database
from archiver.web import queries, render


@dataclass(frozen=True)
class EventRow:
    """One event of the timeline, formatted: the template only places strings."""

    #: task_events.id, for the links to its full JSON.
    id: int
    offset: str
    name: str
    #: The recording's seek position; empty when it cannot seek there.
    seek: str
    stamp: str
    payload: render.Preview
    extra: render.Preview | None
    #: What happened, in one line, for the collapsed row.
    preview: str = ""


class Timeline:
    """The events of one page of a task, iterated once by the template. After the
    iteration, :attr:`next_page` is the keyset of the next page (None: this was the last)
    and :attr:`error` what stopped it early, if the archive could not be read."""

    def __init__(
        self,
        database: Database,
        task_id: str,
        created: datetime | None,
        *,
        seekable: bool,
        after: tuple[datetime | None, int] | None,
        size: int = queries.EVENTS_PAGE,
    ) -> None:
        self.database = database
        self.task_id = task_id
        self.created = created
        self.seekable = seekable
        self.after = after
        self.size = size
        self.shown = 0
        self.next_page: str | None = None
        self.error: str | None = None

    def __iter__(self) -> Iterator[EventRow]:
        after = self.after
        while self.shown < self.size:
            want = min(queries.EVENTS_BATCH, self.size - self.shown)
            last = want == self.size - self.shown
            try:
                with self.database.reading() as conn:
                    # The last batch reads one more: whether a next page exists.
                    batch = queries.event_batch(
                        conn, self.task_id, self.created, after, want + last
                    )
            except ArchiverError as exc:
                self.error = str(exc)
                return
            if len(batch) > want:
                batch = batch[:want]
                self.next_page = queries.encode_event_cursor(batch[-1])
            for event in batch:
                self.shown += 1
                yield self._row(event)
            if len(batch) < want or self.next_page is not None:
                return
            after = (batch[-1].timestamp_utc, batch[-1].id)

    def _row(self, event: queries.Event) -> EventRow:
        offset = event.offset_s
        seek = self.seekable and offset is not None and offset >= 0
        return EventRow(
            id=event.id,
            offset=render.offset_label(offset),
            name=event.name,
            seek=f"{offset:.3f}" if seek and offset is not None else "",
            stamp=render.utc(event.timestamp_utc),
            payload=render.payload_view(event),
            extra=render.extra_view(event),
            preview=render.event_preview(event),
        )
