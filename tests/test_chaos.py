"""Chaos: passes under API and artifact-host faults, then clean passes, must end in exactly
the ground truth, with the settings users run (retries with back-off, per-task back-off).

The fault mix is every kind the simulator injects: on the API 5xx, 429, dropped
connections, truncated bodies, garbage and HTML bodies behind a 200, latency spikes; on the
artifact host 503, 429, dropped connections and truncated bodies. ARCHIVER_CHAOS_PASSES
raises the number of faulty passes (default 8: fewer leave some fault kind unexercised,
which the test checks) for a longer soak; ARCHIVER_CHAOS_SEEDS (comma-separated, default
"1": CI's budget) runs the faulty passes with more fault seeds.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from archiver.config import SyncOptions
from archiver.engine import BackfillPass, SyncPass, run_command
from archiver.simulator import FAULT_KINDS
from archiver.simulator.config import FILE_FAULT_KINDS
from archiver.store.database import Database
from archiver.store.tasks import insert_task_stubs
from archiver.timestamps import utcnow
from tests.conftest import assert_artifacts_match_truth, assert_matches_truth, client_config

PASSES = int(os.environ.get("ARCHIVER_CHAOS_PASSES", "8"))
SEEDS = [int(seed) for seed in os.environ.get("ARCHIVER_CHAOS_SEEDS", "1").split(",")]


@pytest.mark.parametrize("seed", SEEDS)
def test_faulty_passes_then_one_clean_pass_reach_ground_truth(
    database: Database, make_simulator, tmp_path: Path, production_retries: None, seed: int
) -> None:
    """30% of API and artifact requests fail in every way; after the faults stop, ONE clean
    pass with default settings holds exactly the truth: tasks, events, artifacts."""
    sim = make_simulator(
        tasks=24,
        events_per_task=10,
        seed=seed,
        spacing_s=30.0,
        duration_s=(60.0, 400.0),
        event_tie_rate=0.3,
        null_event_id_rate=0.2,
        null_event_timestamp_rate=0.05,
        created_at_group=3,
        fault_rate=0.3,
        fault_seed=seed,
        latency_spike_ms=30.0,
        file_fault_rate=0.3,
        file_fault_seed=seed,
    )
    options = SyncOptions(concurrency=6, page_size=8, downloads=True, blob_url=str(tmp_path))
    for _ in range(PASSES):
        result = run_command(SyncPass(), database, client_config(sim), options)
        assert result.exit_code in (0, 1), result.message
        sim.advance(70.0)
    assert {f"fault:{kind}" for kind in FAULT_KINDS} <= set(sim.stats), dict(sim.stats)
    assert {f"file_fault:{kind}" for kind in FILE_FAULT_KINDS} & set(sim.stats)
    sim.config = replace(sim.config, fault_rate=0.0, file_fault_rate=0.0)
    sim.finish_all()
    clean = run_command(SyncPass(), database, client_config(sim), options)
    assert clean.exit_code == 0, clean.errors
    assert_matches_truth(database, sim)
    assert_artifacts_match_truth(database, sim)


def test_backfill_under_faults_completes_on_the_next_run(
    database: Database, make_simulator, production_retries: None
) -> None:
    """A backfill whose listing and polls fail part-way finishes on the next clean run."""
    sim = make_simulator(
        tasks=40,
        events_per_task=8,
        seed=5,
        fault_rate=0.25,
        fault_seed=5,
        latency_spike_ms=20.0,
    )
    sim.finish_all()
    options = SyncOptions(concurrency=8)
    first = run_command(BackfillPass(), database, client_config(sim), options)
    assert first.exit_code in (0, 1)
    sim.config = replace(sim.config, fault_rate=0.0)
    second = run_command(BackfillPass(), database, client_config(sim), options)
    assert second.exit_code == 0, second.errors
    assert_matches_truth(database, sim)


def test_artifacts_left_pending_are_finished_by_later_sync_passes(
    database: Database, make_simulator, tmp_path: Path
) -> None:
    """Tasks archived while downloads were off, then a backfill --downloads while the
    artifact host refuses each file once: later `sync --downloads` passes bring every
    artifact to its final state, and status counts what is left meanwhile."""
    from archiver.artifacts import artifact_status

    sim = make_simulator(tasks=10, events_per_task=3, seed=7, file_errors=(503,))
    sim.finish_all()
    assert run_command(SyncPass(), database, client_config(sim), SyncOptions()).exit_code == 0
    downloads = SyncOptions(downloads=True, blob_url=str(tmp_path))
    backfill = run_command(BackfillPass(), database, client_config(sim), downloads)
    assert backfill.exit_code == 1  # every file failed once (one attempt in this test)
    with database.reading() as conn:
        assert artifact_status(conn)["tasks_with_artifacts_to_do"] > 0
    for _ in range(2):
        run_command(SyncPass(), database, client_config(sim), downloads)
    assert_artifacts_match_truth(database, sim)
    with database.reading() as conn:
        assert artifact_status(conn)["tasks_with_artifacts_to_do"] == 0


def test_circuit_breaker_ends_the_pass_early_and_records_it(
    database: Database, make_simulator
) -> None:
    """When every request fails, the pass stops after the threshold and exits 1."""
    sim = make_simulator(tasks=40, seed=6, fault_rate=1.0, fault_kinds=("503",))
    sim.finish_all()
    with database.transaction() as conn:  # 40 known, active tasks
        insert_task_stubs(conn, sorted(sim.truth()), utcnow())
    result = run_command(
        SyncPass(),
        database,
        client_config(sim, circuit_breaker_failures=5),
        SyncOptions(concurrency=1, discover=False),
    )
    assert result.exit_code == 1
    assert result.outcome == "failed" and "in a row" in (result.message or "")
    assert sim.stats["fault"] == 5
