"""Per-event and per-task CPU cost of keys, exactness checks and JSON serialisation.

    python benchmarks/json_columns.py --tasks 200 --events 50

On ordinary simulator payloads: what ``insert_events`` and ``TaskColumns.values`` compute per
event / task before the database sees it (event key, typed/raw split as storage text),
per dialect, next to ``floor``: orjson and SHA-256 alone, the least any
version can do. Prints JSON; microseconds are the best of several repeats.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import timeit
from collections.abc import Callable

import orjson

from archiver.jsonvalues import column_texts, json_column, storage_json
from archiver.models import TaskEvent, TaskInfo, parse_events
from archiver.simulator import Simulator, SimulatorConfig
from archiver.store.columns import TASK_COLUMNS


def _dumps(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def floor_events(events: list[TaskEvent]) -> Callable[[], None]:
    """The floor: one canonical serialisation and hash per event, one payload dump."""

    def run() -> None:
        for ev in events:
            text = _dumps([ev.id, ev.name, ev.timestamp, ev.payload])
            hashlib.sha256(text.encode()).hexdigest()
            _dumps(ev.payload)

    return run


def archiver_events(events: list[TaskEvent], dialect: str) -> Callable[[], None]:
    column = json_column(dialect)

    def run() -> None:
        for ev in events:
            ev.identity  # noqa: B018 (the event key's hash, what keyed_events computes)
            column_texts(ev.payload, column)
            column_texts(ev.extra, column)

    return run


def floor_tasks(tasks: list[TaskInfo]) -> Callable[[], None]:
    def run() -> None:
        for task in tasks:
            _dumps(task.output)
            _dumps(task.model_dump(mode="json", exclude={"events"}))

    return run


def archiver_tasks(tasks: list[TaskInfo], dialect: str) -> Callable[[], None]:
    def run() -> None:
        for task in tasks:
            values = TASK_COLUMNS.values(task, dialect)
            storage_json(values["output"])
            storage_json(values["payload"])

    return run


def micros(fn: Callable[[], None], n: int) -> float:
    return round(min(timeit.repeat(fn, repeat=7, number=3)) / 3 / n * 1e6, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sim = Simulator(SimulatorConfig(tasks=args.tasks, events_per_task=args.events, seed=args.seed))
    sim.finish_all()
    truth = sim.truth()
    events = [ev for entry in truth.values() for ev in parse_events(entry["events"]) or ()]
    tasks = [TaskInfo.model_validate(entry["task"]) for entry in truth.values()]
    figures: dict[str, float] = {"events": len(events), "tasks": len(tasks)}
    figures["us_per_event_floor"] = micros(floor_events(events), len(events))
    figures["us_per_task_floor"] = micros(floor_tasks(tasks), len(tasks))
    for dialect in ("sqlite", "postgresql"):
        figures[f"us_per_event_{dialect}"] = micros(archiver_events(events, dialect), len(events))
        figures[f"us_per_task_{dialect}"] = micros(archiver_tasks(tasks, dialect), len(tasks))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
