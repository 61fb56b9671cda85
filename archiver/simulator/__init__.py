"""A faithful, deterministic simulator of the Smooth API, served over real HTTP.

Modules: :mod:`~archiver.simulator.config` (the knobs), :mod:`~archiver.simulator.scenario`
(tasks, events, views and ground truth; no I/O), :mod:`~archiver.simulator.content` (the
artifact bytes), :mod:`~archiver.simulator.server` (:class:`Simulator`: clock, routes, stats),
:mod:`~archiver.simulator.httpd` (HTTP plumbing), :mod:`~archiver.simulator.faults` (fault
injection), :mod:`~archiver.simulator.files` (the artifact host) and
:mod:`~archiver.simulator.cli` (``python -m archiver.simulator``).

Stdlib only. :class:`Simulator` precomputes a whole scenario (tasks and their events) from
:class:`SimulatorConfig` at construction, then serves it on a loopback port with a
``ThreadingHTTPServer`` (HTTP/1.1 keep-alive, ``Content-Length`` always sent). Every piece of
content is derived from ``random.Random(config.seed)``; the wall clock is never consulted for
content. Time is a *simulated* clock (epoch seconds) that only moves when told to
(:meth:`Simulator.advance`, :meth:`Simulator.set_time`, :meth:`Simulator.finish_all`, or the
``/_sim/...`` control endpoints).

API surface (base path ``/api/v1``, see /work/shared/smooth-api):

``GET /api/v1/task?l=L&t=T`` (List Tasks)
    ``{"r": [TaskResponse, ...]}`` newest first: ``created_at`` descending, ties broken by task
    id descending. ``l`` is 1..128 (default 32), ``t`` (optional, integer, in the
    ``created_at`` unit) keeps only tasks with ``created_at < t`` (strictly). Only tasks that
    exist by now are listed; with ``late_list_delay_s`` every 5th task (index 4, 9, 14, ...)
    shows up in the list only that many sim-seconds after its creation (Get Task finds it as
    soon as it exists). List items have ``events: null`` and ``downloads_url: null``.

``GET /api/v1/task/{id}?event_t=E&downloads=true|false`` (Get Task)
    ``{"r": TaskResponse}`` with HTTP 200 once the task has ended (done/failed/cancelled, or
    ``unknown_final_status``), 202 before (waiting/running, or ``unknown_status``), 404
    ``{"detail": "Task not found"}`` for unknown ids, ids of tasks not created yet, and
    ``gone_task_ids``. ``events`` holds the events visible now whose
    timestamp is strictly greater than ``E`` (default 0), in order.

    *Null timestamps*: an event whose ``timestamp`` is null is returned only when
    ``event_t == 0``, mimicking a SQL ``WHERE timestamp > :event_t`` filter (NULL > x is
    never true) behind an "event_t=0 means no filter" shortcut. A client that polls with a
    cursor therefore sees such events only on its very first poll, if they exist by then.

    With ``ignore_event_t`` (a simulated server bug) all visible events are returned.
    Query parameters are validated like FastAPI would: a non-integer ``event_t``/``l``/``t``
    or a non-boolean ``downloads`` gives 422 with a FastAPI-style ``{"detail": [...]}``.

Task life cycle (per task, seeded): created at ``start + i * spacing_s`` (with
``created_at_group`` G, the G tasks of a group are all created at the group's first slot and
share one ``created_at``); ``waiting`` for 1-5 s (at most a quarter of the run); ``running``
until ``created + duration``; then ``done`` (~80 %), ``failed`` (~12 %) or ``cancelled``.

Fields:

* ``id``: ``tsk_`` + 12 hex chars. ``agent_version``: an extra field not in the spec.
* ``output``: null until terminal, then any JSON value (string, object, array, number,
  boolean or null; an error string/object for failed tasks, null for cancelled ones).
* ``credits_used``: 0 while waiting, grows linearly while running, final value once terminal
  (with ``credits_settle_s``, it still grows a little after the end; see below).
* ``device``: ``desktop`` / ``mobile`` / ``desktop-lg``.
* ``live_url``: ``https://live.smooth.sh/<id>?token=<hex>`` while waiting/running, ``""``
  once terminal (the live view is over).
* ``recording_url``: null while waiting/running and for the first ``ARTIFACT_DELAY_S`` (10)
  sim-seconds after the end ("not available yet"), then ``""`` (no recording; probability
  ``1 - recording_rate``) or a presigned-looking URL on this server.
* ``downloads_url``: null unless ``downloads=true`` was asked for *and* the task is terminal;
  then ``""`` (no downloaded files, ~30 %) or a presigned-looking URL on this server.
* ``created_at``: integer in ``created_at_unit``.
* ``events``: ``{"id", "name", "payload", "timestamp"}``. Names are ``browser_action``,
  ``session_action``, ``tool_call`` and rarely ``agent_note`` (an unseen name). Timestamps
  are integers in ``event_timestamp_unit`` (floor of the event's instant), non-decreasing,
  the last event exactly at the task's end (so it arrives in the same response as the
  terminal status). An event becomes visible at its instant; a "tied" event
  (``event_tie_rate``) reuses the previous event's timestamp although it becomes visible
  later, so two events with one timestamp can straddle a poll (with ``"s"`` timestamps
  this also happens naturally). Event ids are unique across the scenario (or null).

Extras beyond the brief: the presigned file URLs are actually served
(``GET /files/<id>/recording.mp4`` - deterministic bytes, ``GET /files/<id>/downloads.zip`` -
a small deterministic zip) when the signature matches (403 otherwise) and the file is
available (404 otherwise); ``X-Amz-Expires`` is not enforced. File requests count under
``stats["file"]`` / ``stats["file:<id>"]`` / ``stats["file:<id>/<name>"]`` (and bytes sent
under ``stats["file_bytes"]``) only.

Artifact-host knobs (all off by default): ``recording_bytes`` (a recording of that size,
generated on the fly so even 2 GiB is never held in memory), ``playable_recordings`` (every
recording is the packaged 4-second WebM, ``video/webm``, which browsers play),
``recording_content_type`` / ``downloads_content_type``, ``hostile_zip_task_ids`` (member
names ``../../etc/passwd``, ``/etc/shadow``, ``C:/...``), ``corrupt_zip_task_ids`` (the
zip's end is cut off),
``recording_url_override`` (e.g. a ``file://`` link), ``link_ttl_s`` (links carry
``X-Amz-Date`` and expire that many sim-seconds later: 403), ``single_use_links`` (each
issued link works once: 403 after), ``file_transfer_s`` (the sim clock advances per file
served, as a long transfer would), ``file_errors`` (statuses answered to the first
requests of each file, e.g. ``(410,)``), ``truncate_file_requests`` (the first N
transfers of each file stop halfway and hang up), ``file_chunk_bytes`` /
``file_chunk_delay_s`` (slow transfers), ``file_chunked`` (no Content-Length) and
``file_redirect`` (``"http"``: a 302 to ``/redirected/...`` on this server; any other
value is sent as the Location, e.g. ``file:///etc/passwd``). Helpers for tests:
:meth:`Simulator.file_bytes` and :meth:`Simulator.file_sha256`.

Faults (all off by default; each draw is seeded and taken in request order, so the same seed
and the same sequence of requests meet the same faults; see also :mod:`.faults`):

* API: ``fault_rate`` / ``fault_kinds`` (subset of :data:`FAULT_KINDS`) / ``fault_seed``:
  ``"500"``, ``"502"``, ``"503"``, ``"429"`` (``Retry-After: retry_after``, default ``"0"``),
  ``"drop"`` (connection closed, no response), ``"truncate"`` (a 200 cut off halfway),
  ``"garbage"`` (a 200 that is not JSON), ``"html200"`` (a 200 HTML error page), ``"spike"``
  (``latency_spike_ms`` more, then a normal answer). Counted as ``stats["fault"]`` and
  ``stats["fault:<kind>"]``.
* Artifact host: ``file_fault_rate`` / ``file_fault_kinds`` (subset of
  :data:`FILE_FAULT_KINDS`: ``"503"`` (S3 SlowDown, XML body), ``"429"`` (``Retry-After:
  retry_after``), ``"drop"``, ``"truncate"`` (a 200 whose body stops halfway; applied only
  where the file would be served)) / ``file_fault_seed`` (a draw of its own, apart from the
  API's). Drawn for every ``/files/`` or ``/redirected/`` request before its link is checked
  (faulted requests do not use up ``file_errors`` / ``truncate_file_requests``). Counted as
  ``stats["file_fault"]`` and ``stats["file_fault:<kind>"]``.
* ``captive_portal``: every API request (any path under ``/api/v1``, before the key check)
  answers 200 ``text/html`` with a sign-in page: a captive portal or a wrong proxy. Counted
  as ``stats["captive_portal"]``; files and control endpoints are unaffected.
* ``malformed_list_item_rate`` (a seeded draw per task) and/or ``malformed_list_item_ids``:
  List Tasks serves those tasks malformed (``status: 123``, ``credits_used: "lots"``,
  ``device: "toaster"``, ``events: "x"``; ``id`` and ``created_at`` intact) in the first
  ``malformed_list_listings`` (default 1) List responses that include them, then
  well-formed; Get Task always serves them well-formed (``malformed_task_ids`` is the Get
  Task counterpart). Each malformed listing counts in ``stats["list_malformed"]``.

What the docs do not promise (scenario knobs, all off by default; each task draws from a
generator of its own per knob, ``Random(f"{seed}:{task_id}:{knob}")``, so switching one on
changes nothing else in the scenario, and the same seed gives the same result):

* ``duplicate_event_rate``: each event whose ``id`` is null is, with this probability, sent
  twice: an exact copy (same name, timestamp, payload, null id) follows it in the event list,
  visible halfway between the original's instant and the next event's (with the original
  when it is the task's last event), so the two copies can straddle a poll just like tied
  events. Both copies are real: truth lists both. Needs ``null_event_id_rate`` > 0.
* ``late_payload_rate`` / ``late_payload_delay_s`` (default 30) / ``late_payload_form``
  (``"partial"``: the payload's first key only, e.g. ``{"name": "click"}``; ``"empty"``:
  ``{}``; ``"null"``: JSON null, against the spec): each event with an id is, with this
  probability, served in that incomplete form from when it appears until
  ``late_payload_delay_s`` sim-seconds later, then with its full payload (same id, name and
  timestamp, same place in the list). The fill can land after the task ended; a client whose
  ``event_t`` is already past the event's timestamp does not see it unless it asks again
  with a lower ``event_t`` (or 0). Truth holds the payload as served now: after the fill,
  the full payload, once.
* ``unknown_status_rate`` / ``unknown_status`` (default ``"paused"``): a task reports that
  status for the middle third of its running time (HTTP 202, credits still growing), then
  ``running`` again, then ends as usual.
* ``unknown_final_status_rate`` / ``unknown_final_status`` (default ``"expired"``): a task
  ends with that status instead of done/failed/cancelled and keeps it for good (HTTP 200 from
  its end, output null, artifacts as usual). Both statuses must be ones the spec does not
  list (:data:`KNOWN_STATUSES`).
* ``credits_settle_s``: after its end every task's ``credits_used`` still grows, by 1-5
  credits in all (seeded), linearly over that many sim-seconds, then settles. The first
  terminal read shows the usual final value; truth shows the value as of now, so the
  settled one once ``credits_settle_s`` has passed. (Artifact links already appear only
  ``ARTIFACT_DELAY_S`` after the end.)

:meth:`Simulator.truth` is the API's state *now*; :meth:`Simulator.finish_all` moves the clock
past every task's end, listing delay, artifact delay, credit settling and payload fill, so
after it ``truth()`` is exactly what a perfect archiver must end with (compare events as
multisets: duplicates are real).

Scenario knobs are fixed when the :class:`Simulator` is built; request-time knobs (latency,
key, faults, ``captive_portal``, ``malformed_list_*``, ``gone_task_ids``,
``malformed_task_ids``, ``ignore_event_t`` and the artifact-host knobs) are read per request,
so a test may change them on a running simulator with
``sim.config = dataclasses.replace(sim.config, fault_rate=0.0)`` (or ``POST /_sim/config``).

Request counting for crash tests: :attr:`Simulator.api_requests` counts every API request
(any path under ``/api/v1``, whatever its answer) on arrival, and
``Simulator.wait_for_requests(k, timeout) -> bool`` blocks until it reaches ``k``, e.g. to
SIGKILL a real ``archiver`` right after its k-th request. :meth:`Simulator.reset_stats`
resets it along with ``stats``. (It is not a key of ``stats``, which keeps its per-route
counters.)
``stats["get_in_flight_max"]`` is the most Get Task requests the simulator was answering
at once (since the start or the last reset): what a client's ``--concurrency`` allows.

Control endpoints (no api key, no latency, not counted in stats): ``POST /_sim/advance?seconds=X``,
``POST /_sim/set_time?t=X``, ``POST /_sim/finish_all``, ``POST /_sim/reset_stats``,
``GET /_sim/now``, ``GET /_sim/stats``, ``GET /_sim/truth``, and ``GET /_sim/config`` /
``POST /_sim/config?name=value&...`` to show / change the request-time knobs listed in
:data:`~archiver.simulator.config.RUNTIME_KNOBS` (422 for any other name or a bad value).

CLI: ``python -m archiver.simulator [--port 0] [--tasks N] [--events M] [--seed S]
[--latency-ms L] [--finish-all] [--fault-rate P --fault-kinds 503,drop,...] ...`` prints the
base URL as its first stdout line and serves until SIGTERM/SIGINT; ``--help`` describes every
option. The API key comes from the environment variable ``CIRCLEMIND_API_KEY`` (the one the
archiver reads), never from the command line; unset or empty, no key is required.
"""

from archiver.simulator.cli import main
from archiver.simulator.config import (
    ARTIFACT_DELAY_S,
    FAULT_KINDS,
    FILE_FAULT_KINDS,
    KNOWN_STATUSES,
    LIST_DEFAULT_LIMIT,
    LIST_MAX_LIMIT,
    TERMINAL_STATUSES,
    SimulatorConfig,
)
from archiver.simulator.server import Simulator

__all__ = [
    "ARTIFACT_DELAY_S",
    "FAULT_KINDS",
    "FILE_FAULT_KINDS",
    "KNOWN_STATUSES",
    "LIST_DEFAULT_LIMIT",
    "LIST_MAX_LIMIT",
    "TERMINAL_STATUSES",
    "Simulator",
    "SimulatorConfig",
    "main",
]
