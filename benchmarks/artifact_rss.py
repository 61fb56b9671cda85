"""Peak memory of `archiver sync --downloads` while it stores one large recording.

    python benchmarks/artifact_rss.py                 # a 2 GiB recording
    python benchmarks/artifact_rss.py --size-mb 512

The simulator runs in its own process and generates the recording on the fly (it never
holds it whole either); `archiver sync --downloads` runs in another process into a local
blob store and a fresh SQLite file. Its peak RSS (``ru_maxrss`` from ``wait4``) is
compared with a baseline: the same command storing a 1 MiB recording. Prints JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).with_name("archiver")
KEY = "bench-key"
MiB = 1024 * 1024


def run_once(size: int, chunk: int, workdir: Path) -> dict[str, Any]:
    """Serve one task with a ``size``-byte recording and archive it; figures of that run."""
    sim = subprocess.Popen(
        [
            sys.executable, "-m", "archiver.simulator", "--port", "0", "--finish-all",
            "--tasks", "1", "--events", "3", "--seed", "5",
            "--recording-rate", "1", "--recording-bytes", str(size),
            "--file-chunk-bytes", str(chunk),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "CIRCLEMIND_API_KEY": KEY},  # the simulator takes its key from here
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        base_url = sim.stdout.readline().strip()
        blobs = workdir / "blobs"
        env = {
            **os.environ,
            "CIRCLEMIND_API_KEY": KEY,
            "ARCHIVER_API_URL": base_url,
            "ARCHIVER_HOME": str(workdir),
            "ARCHIVER_DATABASE_URL": f"sqlite:///{workdir}/bench.db",
            "ARCHIVER_BLOB_URL": str(blobs),
            "ARCHIVER_MAX_ARTIFACT_SIZE": str(max(size, 1) * 2),
        }
        started = time.monotonic()
        proc = subprocess.Popen(
            [str(BIN), "sync", "--downloads", "-q"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        if proc.returncode != 0:
            raise SystemExit(f"archiver sync failed ({proc.returncode}): {stderr}")
    finally:
        sim.terminate()
        sim.wait(timeout=30)
    recordings = list((blobs / "tasks").rglob("recording.*"))
    if len(recordings) != 1 or recordings[0].stat().st_size != size:
        raise SystemExit(f"expected one {size}-byte recording, found {recordings}")
    return {"wall_s": wall, "peak_rss_kib": usage.ru_maxrss, "blob": str(recordings[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=2048.0, help="recording size, MiB")
    parser.add_argument("--chunk-kb", type=int, default=1024, help="simulator write size, KiB")
    parser.add_argument("--check-sha", action="store_true", help="re-hash the stored blob")
    args = parser.parse_args()
    size = int(args.size_mb * MiB)
    with tempfile.TemporaryDirectory() as base, tempfile.TemporaryDirectory() as big:
        baseline = run_once(1 * MiB, args.chunk_kb * 1024, Path(base))
        measured = run_once(size, args.chunk_kb * 1024, Path(big))
        sha = None
        if args.check_sha:
            digest = hashlib.sha256()
            with open(measured["blob"], "rb") as handle:
                while block := handle.read(MiB):
                    digest.update(block)
            sha = digest.hexdigest()
    figures = {
        "size_bytes": size,
        "size_mib": round(size / MiB, 1),
        "wall_s": round(measured["wall_s"], 2),
        "mb_per_s": round(size / 1e6 / measured["wall_s"], 1),
        "peak_rss_mib": round(measured["peak_rss_kib"] / 1024, 1),
        "baseline_rss_mib": round(baseline["peak_rss_kib"] / 1024, 1),
        "rss_over_baseline_mib": round(
            (measured["peak_rss_kib"] - baseline["peak_rss_kib"]) / 1024, 1
        ),
        "baseline_wall_s": round(baseline["wall_s"], 2),
        "sha256": sha,
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
