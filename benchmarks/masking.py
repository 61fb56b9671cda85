"""The cost of masking at ingest: `archiver backfill` without rules and with five rules
(--mask-rules), each in its own process against a simulator in its own process; prints
one JSON line per run and, per repetition, the difference per event.

    python benchmarks/masking.py                                  # small: 200 tasks x 20 events
    python benchmarks/masking.py --tasks 2000 --events 50 --repeat 3
    python benchmarks/masking.py --modes none                     # today's cost, any version

The five rules (``RULES``) are four patterns (e-mail addresses, phone numbers, IBANs, two
words the simulator's text often holds, so replacements are paid for too) and one path
rule (what every ``browser_action`` typed). Mode ``secrets`` uses the built-in set instead.
``masking_cpu_us_per_event`` is the archiver's extra CPU time (user + system) per event
over the run without rules; CPU, not wall time, since the backfill waits on the simulator.
``masker_only_cpu_us_per_event`` is the masker alone (``Masker.event`` on the simulator's
events, in this process, best of five): what the rules cost without the pipeline around.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tomllib

from _bench import archive_and_simulator, bench_args, database_label, load, r, run_archiver

RULES = r"""
[[rule]]
name = "emails"
pattern = "[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}"

[[rule]]
name = "phones"
pattern = "\\+?\\d[\\d ()-]{8,}\\d"

[[rule]]
name = "ibans"
pattern = "\\b[A-Z]{2}\\d{2}[A-Z0-9]{11,30}\\b"

[[rule]]
name = "words"
pattern = "\\b(?:checkout|invoice)\\b"

[[rule]]
name = "typed"
event = "browser_action"
path = "input.text"
"""
RULE_FILES = {"rules": RULES, "secrets": 'use = ["secrets"]\n'}


def main() -> None:
    parser = bench_args(__doc__, tasks=200, events=20, sizes="2000 x 50")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="per request")
    parser.add_argument(
        "--modes", default="none,rules", help="comma-separated: none, rules, secrets"
    )
    args = parser.parse_args()
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    per_mode: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(args.repeat):
        for mode in modes:
            figures = run(args, mode)
            per_mode[mode].append(figures["archiver_cpu_s"])
            print(json.dumps(figures), flush=True)
    if "none" in per_mode and len(per_mode) > 1:
        events = args.tasks * args.events
        base = statistics.median(per_mode["none"])
        for mode, cpus in per_mode.items():
            if mode != "none":
                extra = statistics.median(cpus) - base
                summary = {
                    "benchmark": "masking",
                    "mode": mode,
                    "median_cpu_s": r(statistics.median(cpus)),
                    "median_cpu_s_without_rules": r(base),
                    "masking_cpu_us_per_event": r(extra * 1e6 / events, 2),
                    "masking_cpu_share": r(extra / base),
                    "masker_only_cpu_us_per_event": r(masker_only(args, mode), 2),
                }
                print(json.dumps(summary), flush=True)


def masker_only(args: argparse.Namespace, mode: str) -> float:
    """CPU microseconds per event of ``Masker.event`` alone on the simulator's events."""
    from archiver.masking import builtin, masker, rules
    from archiver.models import parse_events
    from archiver.simulator import SimulatorConfig
    from archiver.simulator.scenario import Scenario

    config = SimulatorConfig(tasks=args.tasks, events_per_task=args.events, seed=args.seed)
    events = [
        event
        for task in Scenario(config).tasks
        for event in parse_events([dict(d) for d in task.event_dicts]) or []
    ]
    document = tomllib.loads(RULE_FILES[mode])
    masking = masker.Masker(rules.parse_rules(document, mode, builtin=builtin.builtin_set))
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for event in events:
            masking.event(event)
        best = min(best, time.process_time() - started)
    return best * 1e6 / len(events)


def run(args: argparse.Namespace, mode: str) -> dict[str, object]:
    sim_args = ("--latency-ms", str(args.latency_ms))
    with archive_and_simulator(args, *sim_args) as (sim, env):
        command = ["backfill", "-q", "--concurrency", str(args.concurrency)]
        if mode != "none":
            rules = f"{env['ARCHIVER_HOME']}/rules.toml"
            with open(rules, "w") as out:
                out.write(RULE_FILES[mode])
            command += ["--mask-rules", rules]
        proc = run_archiver(command, env, sim)
        stats = sim.stats()
    events = args.tasks * args.events
    return {
        "benchmark": "masking",
        "mode": mode,
        "tasks": args.tasks,
        "events_per_task": args.events,
        "database": database_label(args.database_url),
        "get_requests": stats.get("get", 0),
        "wall_s": r(proc.wall_s),
        "archiver_cpu_s": r(proc.cpu_s),
        "archiver_cpu_us_per_event": r(proc.cpu_s * 1e6 / events, 2),
        "peak_rss_mb": r(proc.peak_rss_mb, 1),
        "load": load(),
    }


if __name__ == "__main__":
    main()
