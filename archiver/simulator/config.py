"""The simulator's knobs (:class:`SimulatorConfig`) and the API constants they refer to.

Scenario knobs (what exists: tasks, events, their timing and content) are read once, when a
:class:`~archiver.simulator.Simulator` is built. Request-time knobs (latency, key, faults,
artifact-host behaviour) are read on every request, so a test may change them on a running
simulator with ``sim.config = dataclasses.replace(sim.config, fault_rate=0.0)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "API_PREFIX",
    "ARTIFACT_DELAY_S",
    "FAULT_KINDS",
    "FILE_FAULT_KINDS",
    "KNOWN_STATUSES",
    "LATE_PAYLOAD_FORMS",
    "LIST_DEFAULT_LIMIT",
    "LIST_MAX_LIMIT",
    "RUNTIME_KNOBS",
    "TERMINAL_STATUSES",
    "UNITS",
    "SimulatorConfig",
    "with_runtime_knobs",
]

API_PREFIX = "/api/v1"
LIST_DEFAULT_LIMIT = 32
LIST_MAX_LIMIT = 128
#: Sim-seconds after a task's end during which ``recording_url`` is still null.
ARTIFACT_DELAY_S = 10.0
URL_EXPIRES_S = 3600
TERMINAL_STATUSES = frozenset({"done", "failed", "cancelled"})
#: Every status the published spec lists.
KNOWN_STATUSES = frozenset({"waiting", "running"}) | TERMINAL_STATUSES
DEVICES = ("desktop", "mobile", "desktop-lg")
#: Probability that a task downloaded no files (``downloads_url == ""``).
NO_DOWNLOADS_RATE = 0.3
#: Probability that an event carries a name the spec does not list.
UNSEEN_EVENT_NAME_RATE = 0.03
#: Multiplier from epoch seconds to each timestamp unit.
UNITS = {"s": 1, "ms": 1000}

FAULT_KINDS = ("500", "502", "503", "429", "drop", "truncate", "garbage", "html200", "spike")
#: Faults of the artifact host (presigned object storage under load).
FILE_FAULT_KINDS = ("503", "429", "drop", "truncate")
#: Forms of an event payload that is not filled in yet (``late_payload_form``).
LATE_PAYLOAD_FORMS = ("partial", "empty", "null")


@dataclass(frozen=True)
class SimulatorConfig:
    """Knobs of a simulated scenario. Same config (incl. seed) -> same scenario."""

    seed: int = 0
    tasks: int = 20  # number of tasks in the scenario
    events_per_task: int = 10  # events each task emits over its run
    start: int = 1_764_000_000  # epoch seconds at which task 0 is created
    spacing_s: float = 60.0  # seconds between consecutive task creations
    duration_s: tuple[float, float] = (30.0, 600.0)  # run length range (seeded draw)
    # sim clock at start (epoch seconds); None = the moment the last task is created
    initial_time: float | None = None
    event_timestamp_unit: str = "ms"  # "ms" or "s": unit of event timestamps
    created_at_unit: str = "s"  # "ms" or "s": unit of created_at
    created_at_group: int = 1  # this many consecutive tasks share one created_at
    event_tie_rate: float = 0.0  # P(event timestamp == previous event's timestamp)
    null_event_id_rate: float = 0.0  # P(event id is null)
    null_event_timestamp_rate: float = 0.0  # P(event timestamp is null)
    ignore_event_t: bool = False  # server bug: return all visible events regardless of event_t
    latency_ms: float = 0.0  # added latency per API request
    api_key: str | None = None  # when set, requests need header `apikey: <this>` (else 401)
    gone_task_ids: frozenset[str] = frozenset()  # Get Task -> 404 (still listed)
    malformed_task_ids: frozenset[str] = frozenset()  # Get Task -> 200 with a malformed body
    late_list_delay_s: float = 0.0  # every 5th task is listed only this long after creation
    recording_rate: float = 0.8  # P(a finished task has a recording)
    # API fault injection (chaos tests): each API request draws one fault with this
    # probability, the kind chosen uniformly from fault_kinds. Deterministic per fault_seed
    # and request order. Kinds: "500", "502", "503", "429" (with Retry-After: 0), "drop"
    # (connection closed, no response), "truncate" (half the body, then close), "garbage"
    # (200 with bytes that are not JSON), "html200" (200 with an HTML error page),
    # "spike" (latency_spike_ms added, then a normal answer).
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    fault_seed: int = 0
    latency_spike_ms: float = 500.0
    # -- artifact serving (GET /files/...); the defaults keep the plain behaviour above
    recording_bytes: int | None = None  # recording size; None = small (2-32 KB); streamed
    recording_content_type: str = "video/mp4"
    # Every recording is the packaged WebM (4 s, VP8, video/webm), which browsers play:
    # the demo's and a walk-through's web view show a working player.
    playable_recordings: bool = False
    downloads_content_type: str = "application/zip"
    hostile_zip_task_ids: frozenset[str] = frozenset()  # zips with ../, /abs, C:\ names
    corrupt_zip_task_ids: frozenset[str] = frozenset()  # downloads.zip is a truncated zip
    recording_url_override: str | None = None  # recording_url is this link (e.g. file://)
    link_ttl_s: float | None = None  # file links expire this many sim-seconds after issue
    single_use_links: bool = False  # each issued file link works once, then 403
    file_transfer_s: float = 0.0  # sim clock advance per file fully served
    file_errors: tuple[int, ...] = ()  # statuses for the first requests of each file
    truncate_file_requests: int = 0  # the first N 200s of each file stop halfway
    file_chunk_bytes: int = 64 * 1024  # bytes per write when serving a file
    file_chunk_delay_s: float = 0.0  # wall-clock pause between chunks (slow transfer)
    file_chunked: bool = False  # Transfer-Encoding: chunked, no Content-Length
    file_redirect: str | None = None  # "http": 302 to /redirected/...; else a Location URL
    # Artifact-host faults, like the API's: each file request draws one with this
    # probability, the kind chosen uniformly from file_fault_kinds, deterministic per
    # file_fault_seed and file request order (its own draw, apart from the API faults).
    # "503" (S3 SlowDown), "429" (Retry-After: retry_after), "drop" (connection closed, no
    # response), "truncate" (a 200 whose body stops halfway; only where the file would be
    # served). Applied before the link is checked; counted as stats "file_fault" and
    # "file_fault:<kind>".
    file_fault_rate: float = 0.0
    file_fault_kinds: tuple[str, ...] = FILE_FAULT_KINDS
    file_fault_seed: int = 0
    retry_after: str = "0"  # Retry-After header of 429 answers (API and files): secs or date
    # -- what the docs do not promise (issue 9); all off by default, seeded per task, each
    # reflected in truth(). Scenario knobs: fixed when the Simulator is built.
    # P(an event with a null id is sent twice): the identical copy follows it, visible
    # halfway to the next event (with it when last), so the copies can straddle a poll.
    duplicate_event_rate: float = 0.0
    # P(an event with an id is first served with an incomplete payload): late_payload_form
    # until late_payload_delay_s sim-seconds after it became visible, then the full payload
    # (same id, name, timestamp). A cursor past its timestamp does not see the update.
    # JSON texts sent verbatim (so "1.0", "-0.0", "1e308", "\\ud83d" arrive as written):
    # an even task i's output is text (i // 2) % n; event k of task i has payload text
    # ((i + k) // 3) % n when i + k is divisible by 3. truth() reports them parsed
    # (in process: GET /_sim/truth cannot encode lone surrogates or deep nesting).
    raw_json_values: tuple[str, ...] = ()
    late_payload_rate: float = 0.0
    late_payload_delay_s: float = 30.0
    late_payload_form: str = "partial"  # "partial" (first key only), "empty" ({}), "null"
    # P(a task reports unknown_status for the middle third of its run, then runs on and
    # ends normally); Get Task answers 202 meanwhile.
    unknown_status_rate: float = 0.0
    unknown_status: str = "paused"
    # P(a task ends with unknown_final_status instead of done/failed/cancelled, for good;
    # output null); Get Task answers 200 from its end.
    unknown_final_status_rate: float = 0.0
    unknown_final_status: str = "expired"
    # After its end a task's credits_used still grows, by 1-5 credits in all, linearly over
    # this many sim-seconds; truth() shows the settled value once they have passed.
    credits_settle_s: float = 0.0
    # Request-time knobs. List Tasks serves these tasks malformed (status 123, credits_used
    # "lots"; id and created_at intact) in the first malformed_list_listings List responses
    # that include them, then well-formed; Get Task always serves them well-formed.
    malformed_list_item_rate: float = 0.0  # P(a task is one of them), seeded per task
    malformed_list_item_ids: frozenset[str] = frozenset()  # ... and these
    malformed_list_listings: int = 1
    # Every API request answers 200 text/html (a captive portal or a wrong proxy).
    captive_portal: bool = False

    def __post_init__(self) -> None:
        for name, valid in (("fault_kinds", FAULT_KINDS), ("file_fault_kinds", FILE_FAULT_KINDS)):
            unknown = set(getattr(self, name)) - set(valid)
            if unknown:
                raise ValueError(f"unknown {name} {sorted(unknown)}; valid: {list(valid)}")
        if self.tasks < 0:
            raise ValueError("tasks must be >= 0")
        if self.events_per_task < 0:
            raise ValueError("events_per_task must be >= 0")
        if self.spacing_s < 0:
            raise ValueError("spacing_s must be >= 0")
        lo, hi = self.duration_s
        if not 0 < lo <= hi:
            raise ValueError("duration_s must be (lo, hi) with 0 < lo <= hi")
        if self.event_timestamp_unit not in UNITS:
            raise ValueError("event_timestamp_unit must be 'ms' or 's'")
        if self.created_at_unit not in UNITS:
            raise ValueError("created_at_unit must be 'ms' or 's'")
        if self.created_at_group < 1:
            raise ValueError("created_at_group must be >= 1")
        for name in (
            "event_tie_rate",
            "null_event_id_rate",
            "null_event_timestamp_rate",
            "recording_rate",
            "fault_rate",
            "file_fault_rate",
            "duplicate_event_rate",
            "late_payload_rate",
            "unknown_status_rate",
            "unknown_final_status_rate",
            "malformed_list_item_rate",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.recording_bytes is not None and self.recording_bytes < 0:
            raise ValueError("recording_bytes must be >= 0")
        if self.file_chunk_bytes < 1:
            raise ValueError("file_chunk_bytes must be >= 1")
        if min(self.file_transfer_s, self.file_chunk_delay_s, self.link_ttl_s or 0.0) < 0:
            raise ValueError("file_transfer_s, file_chunk_delay_s and link_ttl_s must be >= 0")
        for name in ("latency_ms", "late_list_delay_s", "late_payload_delay_s", "credits_settle_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")
        if self.late_payload_form not in LATE_PAYLOAD_FORMS:
            raise ValueError(f"late_payload_form must be one of {list(LATE_PAYLOAD_FORMS)}")
        for name in ("unknown_status", "unknown_final_status"):
            if not getattr(self, name) or getattr(self, name) in KNOWN_STATUSES:
                raise ValueError(f"{name} must be a status the spec does not list")
        if self.malformed_list_listings < 0:
            raise ValueError("malformed_list_listings must be >= 0")


def _flag(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _names(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


#: Request-time knobs that ``POST /_sim/config?name=value`` may change on a running simulator
#: (e.g. faults off after some passes, without losing the clock), with their parsers.
RUNTIME_KNOBS: dict[str, Callable[[str], Any]] = {
    "latency_ms": float,
    "fault_rate": float,
    "fault_kinds": _names,
    "latency_spike_ms": float,
    "retry_after": str,
    "ignore_event_t": _flag,
    "captive_portal": _flag,
    "malformed_list_item_rate": float,
    "malformed_list_listings": int,
    "file_fault_rate": float,
    "file_fault_kinds": _names,
    "file_chunk_delay_s": float,
    "truncate_file_requests": int,
}


def with_runtime_knobs(config: SimulatorConfig, raw: Mapping[str, str]) -> SimulatorConfig:
    """``config`` with the request-time knobs in ``raw`` (text values) changed; ValueError
    naming the knob when one cannot be changed or its value is invalid."""
    changes: dict[str, Any] = {}
    for name, value in raw.items():
        parse = RUNTIME_KNOBS.get(name)
        if parse is None:
            raise ValueError(
                f"{name!r} cannot be changed while running; these can: " + ", ".join(RUNTIME_KNOBS)
            )
        try:
            changes[name] = parse(value)
        except ValueError:
            raise ValueError(f"{name}={value!r} is not a valid value") from None
    return replace(config, **changes)
