"""``python -m archiver.simulator``: serve a simulated Smooth API until SIGTERM/SIGINT.

The first line on stdout is the base URL (``http://HOST:PORT/api/v1``); a one-line summary
goes to stderr. The API key is read from the environment variable ``CIRCLEMIND_API_KEY`` (the
one the archiver reads), never from the command line, so it stays out of ``ps`` listings and
shell history; when the variable is unset or empty, no key is required.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from typing import NoReturn

from archiver.simulator.config import (
    FAULT_KINDS,
    FILE_FAULT_KINDS,
    LATE_PAYLOAD_FORMS,
    UNITS,
    SimulatorConfig,
)
from archiver.simulator.server import Simulator

__all__ = ["API_KEY_ENV", "build_config", "main", "parser"]

API_KEY_ENV = "CIRCLEMIND_API_KEY"
PROG = "python -m archiver.simulator"


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except the empty ones (None, False, ())."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == ():
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not a usage dump: what was wrong and where to look."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(
    kind: Callable[[str], float], lo: float | None, hi: float | None, what: str
) -> Callable[[str], float]:
    """An argparse type: ``kind(raw)`` within [lo, hi], else a message saying what is valid."""

    def parse(raw: str) -> float:
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not {what}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{raw!r} is not {what}")
        return value

    return parse


_RATE = _number(float, 0.0, 1.0, "a probability within [0, 1], e.g. 0.2")
_SECONDS = _number(float, 0.0, None, "a number of seconds >= 0, e.g. 2.5")
_MS = _number(float, 0.0, None, "a number of milliseconds >= 0, e.g. 50")
_COUNT = _number(int, 0, None, "a whole number >= 0")
_POSITIVE = _number(int, 1, None, "a whole number >= 1")
_PORT = _number(int, 0, 65535, "a port number within 0..65535 (0 = any free port)")
_STATUS = _number(int, 100, 599, "an HTTP status within 100..599")


def _choices(valid: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated subset of ``valid``."""

    def parse(raw: str) -> tuple[str, ...]:
        items = tuple(s.strip() for s in raw.split(",") if s.strip())
        bad = [s for s in items if s not in valid]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{raw!r} is not a comma-separated list of {', '.join(valid)}"
            )
        return items

    return parse


def _statuses(raw: str) -> tuple[int, ...]:
    return tuple(int(_STATUS(s.strip())) for s in raw.split(",") if s.strip())


_FIELD = re.compile(r"\b[a-z]+(?:_[a-z]+)+\b")


def _flag(field: str) -> str:
    """The option that sets a config field, for error messages (``duration_s`` ->
    ``--duration-s``)."""
    return "--events" if field == "events_per_task" else "--" + field.replace("_", "-")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description=(
            "Serve a simulated, deterministic Smooth API on loopback for trials of the "
            "archiver. Prints the base URL as the first stdout line and serves until "
            "SIGTERM/SIGINT. Time is simulated: move it with POST /_sim/advance?seconds=X, "
            "/_sim/set_time?t=X or /_sim/finish_all; read GET /_sim/stats, /_sim/truth, "
            "/_sim/now. Faults and other request-time knobs can be changed while it runs: "
            "POST /_sim/config?fault_rate=0&captive_portal=false (GET /_sim/config lists them)."
        ),
        epilog=(
            f"Environment: {API_KEY_ENV} - when set (and not empty), every API request must "
            "carry it in the `apikey` header (else 401). It is never printed."
        ),
        formatter_class=_Help,
    )
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on")
    g.add_argument("--port", type=_PORT, default=0, help="port to listen on; 0 = any free port")
    g.add_argument("--latency-ms", type=_MS, default=0.0, help="latency added to every API request")

    g = p.add_argument_group("scenario (fixed at start; same seed, same scenario)")
    g.add_argument("--seed", type=int, default=0, help="seed of every task and event")
    g.add_argument("--tasks", type=_COUNT, default=20, help="number of tasks")
    g.add_argument("--events", type=_COUNT, default=10, help="events per task")
    g.add_argument(
        "--spacing-s", type=_SECONDS, default=60.0, help="sim-seconds between task creations"
    )
    g.add_argument(
        "--duration-s",
        type=_SECONDS,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=(30.0, 600.0),
        help="range of task run lengths in sim-seconds (0 < MIN <= MAX)",
    )
    g.add_argument(
        "--finish-all",
        action="store_true",
        help="start with the clock past every task's end: all tasks terminal and settled",
    )
    g.add_argument(
        "--created-at-group",
        type=_POSITIVE,
        default=1,
        help="this many consecutive tasks share one created_at (more than 128 cannot be "
        "paged past with the API's strictly-before cursor)",
    )
    g.add_argument(
        "--event-timestamp-unit",
        choices=sorted(UNITS),
        default="ms",
        help="unit of event timestamps",
    )
    g.add_argument(
        "--created-at-unit", choices=sorted(UNITS), default="s", help="unit of created_at"
    )
    g.add_argument(
        "--event-tie-rate",
        type=_RATE,
        default=0.0,
        help="probability that an event reuses the previous event's timestamp",
    )
    g.add_argument(
        "--null-event-id-rate", type=_RATE, default=0.0, help="probability of a null event id"
    )
    g.add_argument(
        "--null-event-timestamp-rate",
        type=_RATE,
        default=0.0,
        help="probability of a null event timestamp",
    )
    g.add_argument(
        "--late-list-delay-s",
        type=_SECONDS,
        default=0.0,
        help="every 5th task shows up in List Tasks only this long after its creation",
    )
    g.add_argument(
        "--recording-rate",
        type=_RATE,
        default=0.8,
        help='probability that a finished task has a recording (else recording_url is "")',
    )

    g = p.add_argument_group("API faults (seeded, in request order)")
    g.add_argument(
        "--fault-rate",
        type=_RATE,
        default=0.0,
        help="probability that an API request meets a fault",
    )
    g.add_argument(
        "--fault-kinds",
        type=_choices(FAULT_KINDS),
        default=None,
        metavar="KIND[,KIND...]",
        help=f"faults drawn uniformly from these (default: all): {', '.join(FAULT_KINDS)}",
    )
    g.add_argument(
        "--fault-seed", type=int, default=0, metavar="SEED", help="seed of the fault draws"
    )
    g.add_argument(
        "--latency-spike-ms",
        type=_MS,
        default=500.0,
        help="latency added by the 'spike' fault",
    )
    g.add_argument(
        "--retry-after",
        default="0",
        metavar="VALUE",
        help="Retry-After header of 429 answers (API and files): seconds or an HTTP date",
    )
    g.add_argument(
        "--ignore-event-t",
        action="store_true",
        help="server bug: Get Task returns every visible event, whatever event_t is",
    )
    g.add_argument(
        "--captive-portal",
        action="store_true",
        help="every API request answers 200 with an HTML page (a captive portal)",
    )
    g.add_argument(
        "--malformed-list-item-rate",
        type=_RATE,
        default=0.0,
        help="probability that a task is served malformed (status 123) by List Tasks in its "
        "first --malformed-list-listings listings; Get Task serves it well-formed",
    )
    g.add_argument(
        "--malformed-list-listings",
        type=_COUNT,
        default=1,
        help="how many listings of such a task are malformed before it heals",
    )

    g = p.add_argument_group("what the docs do not promise (scenario; seeded per task)")
    g.add_argument(
        "--duplicate-event-rate",
        type=_RATE,
        default=0.0,
        help="probability that an event without an id is sent twice, identical (both are "
        "real); needs --null-event-id-rate",
    )
    g.add_argument(
        "--late-payload-rate",
        type=_RATE,
        default=0.0,
        help="probability that an event with an id is first served with an incomplete "
        "payload, then in full (same id, name, timestamp)",
    )
    g.add_argument(
        "--late-payload-delay-s",
        type=_SECONDS,
        default=30.0,
        help="sim-seconds from an event's appearance until its payload is filled in",
    )
    g.add_argument(
        "--late-payload-form",
        choices=LATE_PAYLOAD_FORMS,
        default="partial",
        help="the incomplete payload: its first key only, {} or null",
    )
    g.add_argument(
        "--unknown-status-rate",
        type=_RATE,
        default=0.0,
        help="probability that a task reports --unknown-status for the middle third of its "
        "run (HTTP 202), then ends as usual",
    )
    g.add_argument(
        "--unknown-status",
        default="paused",
        metavar="STATUS",
        help="that status (one the spec does not list)",
    )
    g.add_argument(
        "--unknown-final-status-rate",
        type=_RATE,
        default=0.0,
        help="probability that a task ends with --unknown-final-status for good (HTTP 200)",
    )
    g.add_argument(
        "--unknown-final-status",
        default="expired",
        metavar="STATUS",
        help="that status (one the spec does not list)",
    )
    g.add_argument(
        "--credits-settle-s",
        type=_SECONDS,
        default=0.0,
        help="after its end a task's credits_used still grows by 1-5 over this many sim-seconds",
    )

    g = p.add_argument_group("artifact host (GET /files/...)")
    g.add_argument(
        "--recording-bytes",
        type=_COUNT,
        default=None,
        help="size of every recording, generated on the fly (default: 2-32 KB each)",
    )
    g.add_argument(
        "--playable-recordings",
        action="store_true",
        help="every recording is a real 4-second WebM (video/webm) a browser plays, as in "
        "`archiver demo`; default: video-like bytes of 2-32 KB",
    )
    g.add_argument("--file-chunk-bytes", type=_POSITIVE, default=64 * 1024, help="bytes per write")
    g.add_argument(
        "--file-chunk-delay-s",
        type=_SECONDS,
        default=0.0,
        help="wall-clock pause between chunks (a slow transfer)",
    )
    g.add_argument(
        "--file-errors",
        type=_statuses,
        default=(),
        metavar="STATUS[,STATUS...]",
        help="statuses answered to the first requests of each file, e.g. 503,503",
    )
    g.add_argument(
        "--truncate-file-requests",
        type=_COUNT,
        default=0,
        help="the first N transfers of each file stop halfway and hang up",
    )
    g.add_argument(
        "--link-ttl-s",
        type=_SECONDS,
        default=None,
        help="file links expire this many sim-seconds after they are issued (403 after)",
    )
    g.add_argument(
        "--single-use-links", action="store_true", help="each issued file link works once"
    )
    g.add_argument(
        "--file-fault-rate",
        type=_RATE,
        default=0.0,
        help="probability that a file request meets a fault (seeded, in request order)",
    )
    g.add_argument(
        "--file-fault-kinds",
        type=_choices(FILE_FAULT_KINDS),
        default=None,
        metavar="KIND[,KIND...]",
        help="file faults drawn uniformly from these (default: all): "
        + ", ".join(FILE_FAULT_KINDS),
    )
    g.add_argument(
        "--file-fault-seed",
        type=int,
        default=0,
        metavar="SEED",
        help="seed of the file fault draws",
    )
    metavars: dict[object, str] = {
        _RATE: "P",
        _SECONDS: "SECONDS",
        _MS: "MS",
        _COUNT: "N",
        _POSITIVE: "N",
        _PORT: "PORT",
    }
    for action in p._actions:
        if action.metavar is None and action.type in metavars:
            action.metavar = metavars[action.type]
    return p


def build_config(args: argparse.Namespace, environ: Mapping[str, str]) -> SimulatorConfig:
    """The config the parsed options and the environment ask for (ValueError if invalid)."""
    return SimulatorConfig(
        seed=args.seed,
        tasks=args.tasks,
        events_per_task=args.events,
        spacing_s=args.spacing_s,
        duration_s=tuple(args.duration_s),
        event_timestamp_unit=args.event_timestamp_unit,
        created_at_unit=args.created_at_unit,
        created_at_group=args.created_at_group,
        event_tie_rate=args.event_tie_rate,
        null_event_id_rate=args.null_event_id_rate,
        null_event_timestamp_rate=args.null_event_timestamp_rate,
        ignore_event_t=args.ignore_event_t,
        latency_ms=args.latency_ms,
        api_key=environ.get(API_KEY_ENV) or None,
        late_list_delay_s=args.late_list_delay_s,
        recording_rate=args.recording_rate,
        fault_rate=args.fault_rate,
        fault_kinds=args.fault_kinds or FAULT_KINDS,
        fault_seed=args.fault_seed,
        latency_spike_ms=args.latency_spike_ms,
        recording_bytes=args.recording_bytes,
        playable_recordings=args.playable_recordings,
        file_chunk_bytes=args.file_chunk_bytes,
        file_chunk_delay_s=args.file_chunk_delay_s,
        file_errors=args.file_errors,
        truncate_file_requests=args.truncate_file_requests,
        link_ttl_s=args.link_ttl_s,
        single_use_links=args.single_use_links,
        file_fault_rate=args.file_fault_rate,
        file_fault_kinds=args.file_fault_kinds or FILE_FAULT_KINDS,
        file_fault_seed=args.file_fault_seed,
        retry_after=args.retry_after,
        duplicate_event_rate=args.duplicate_event_rate,
        late_payload_rate=args.late_payload_rate,
        late_payload_delay_s=args.late_payload_delay_s,
        late_payload_form=args.late_payload_form,
        unknown_status_rate=args.unknown_status_rate,
        unknown_status=args.unknown_status,
        unknown_final_status_rate=args.unknown_final_status_rate,
        unknown_final_status=args.unknown_final_status,
        credits_settle_s=args.credits_settle_s,
        malformed_list_item_rate=args.malformed_list_item_rate,
        malformed_list_listings=args.malformed_list_listings,
        captive_portal=args.captive_portal,
    )


def main(argv: list[str] | None = None) -> int:
    p = parser()
    argv = sys.argv[1:] if argv is None else argv
    if any(a == "--api-key" or a.startswith("--api-key=") for a in argv):
        p.error(f"--api-key is no longer accepted: set {API_KEY_ENV} in the environment instead")
    args = p.parse_args(argv)
    try:
        config = build_config(args, os.environ)
    except ValueError as e:
        p.error(_FIELD.sub(lambda m: _flag(m.group(0)), str(e)))
    sim = Simulator(config)
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        url = sim.start(args.host, args.port)
    except OSError as e:
        print(
            f"{PROG}: error: cannot listen on {args.host}:{args.port}: {e.strerror or e}; "
            "choose another --host/--port (--port 0 picks a free one)",
            file=sys.stderr,
        )
        return 1
    if args.finish_all:
        sim.finish_all()
    print(url, flush=True)
    key = (
        f"required (from {API_KEY_ENV})"
        if config.api_key
        else f"not required ({API_KEY_ENV} unset)"
    )
    print(
        f"{PROG}: serving {config.tasks} tasks (seed {config.seed}) at {url}; API key {key}; "
        "stop with Ctrl-C or SIGTERM",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop.wait(0.2):
            pass
    finally:
        sim.stop()
    return 0
