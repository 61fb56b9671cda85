"""``python -m archiver.simulator``: serve a simulated Smooth API until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import signal
import threading

from archiver.simulator.config import UNITS, SimulatorConfig
from archiver.simulator.server import Simulator

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m archiver.simulator", description="Serve a simulated Smooth API."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tasks", type=int, default=20)
    p.add_argument("--events", type=int, default=10, help="events per task")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--finish-all", action="store_true", help="start with every task finished")
    p.add_argument("--created-at-group", type=int, default=1)
    p.add_argument("--ignore-event-t", action="store_true")
    p.add_argument("--api-key", default=None)
    p.add_argument("--event-timestamp-unit", choices=sorted(UNITS), default="ms")
    p.add_argument("--created-at-unit", choices=sorted(UNITS), default="s")
    p.add_argument("--recording-rate", type=float, default=0.8)
    p.add_argument(
        "--recording-bytes", type=int, default=None, help="recording size (generated on the fly)"
    )
    p.add_argument("--file-chunk-bytes", type=int, default=64 * 1024)
    a = p.parse_args(argv)
    sim = Simulator(
        SimulatorConfig(
            seed=a.seed,
            tasks=a.tasks,
            events_per_task=a.events,
            latency_ms=a.latency_ms,
            created_at_group=a.created_at_group,
            ignore_event_t=a.ignore_event_t,
            api_key=a.api_key,
            event_timestamp_unit=a.event_timestamp_unit,
            created_at_unit=a.created_at_unit,
            recording_rate=a.recording_rate,
            recording_bytes=a.recording_bytes,
            file_chunk_bytes=a.file_chunk_bytes,
        )
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    url = sim.start(a.host, a.port)
    if a.finish_all:
        sim.finish_all()
    print(url, flush=True)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        sim.stop()
    return 0
