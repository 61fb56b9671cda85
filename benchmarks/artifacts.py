"""Artifacts at wire speed: `archiver sync --downloads` storing one large recording from
the simulator on loopback, side by side with `curl -o` fetching the same URL to a file on
the same disk, in one run; prints JSON.

    python benchmarks/artifacts.py                      # 128 MiB
    python benchmarks/artifacts.py --size-mb 1024       # the 1 GiB target

The simulator runs in its own process and generates the recording on the fly. The
archiver stores it into a local blob store under the same temporary folder as curl's
file, with SHA-256 and the size cap on (``ARCHIVER_MAX_ARTIFACT_SIZE`` = twice the size).
``ratio`` = archiver throughput / curl throughput, the archiver's over its whole process
(start-up, one List Tasks and one Get Task included) and, in ``ratio_after_startup``,
from its first request on. Each run's files are deleted before the next one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from _bench import Simulator, env_for, load, r, run_archiver, workdir

MiB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=128.0, help="recording size, MiB")
    parser.add_argument("--chunk-kb", type=int, default=1024, help="simulator write size, KiB")
    parser.add_argument("--repeat", type=int, default=1, help="runs, each printed")
    args = parser.parse_args()
    for _ in range(args.repeat):
        print(json.dumps(run(args)), flush=True)


def run(args: argparse.Namespace) -> dict[str, object]:
    size = int(args.size_mb * MiB)
    with workdir() as home:
        sim = Simulator(
            ["--finish-all", "--tasks", "1", "--events", "3", "--seed", "5",
             "--recording-rate", "1", "--recording-bytes", str(size),
             "--file-chunk-bytes", str(args.chunk_kb * 1024)],
            home,
        )  # fmt: skip
        try:
            (task,) = sim.control("truth").values()
            url = task["task"]["recording_url"]
            target = home / "curl.mp4"
            started = time.perf_counter()
            subprocess.run(["curl", "-sS", "--fail", "-o", str(target), url], check=True)
            curl_s = time.perf_counter() - started
            if target.stat().st_size != size:
                raise SystemExit(f"curl fetched {target.stat().st_size} bytes, not {size}")
            target.unlink()
            env = {
                **env_for(sim, home, None),
                "ARCHIVER_BLOB_URL": str(home / "blobs"),
                "ARCHIVER_MAX_ARTIFACT_SIZE": str(size * 2),
            }
            run_archiver(["db", "upgrade"], env)
            proc = run_archiver(["sync", "--downloads", "-q"], env, sim)
        finally:
            sim.close()
        (blob,) = Path(home / "blobs").rglob("recording.*")
        if blob.stat().st_size != size:
            raise SystemExit(f"the archiver stored {blob.stat().st_size} bytes, not {size}")
    curl_rate = size / 1e6 / curl_s
    archiver_rate = size / 1e6 / proc.wall_s
    after = proc.wall_s - (proc.startup_s or 0.0)
    return {
        "benchmark": "artifacts",
        "size_mib": round(size / MiB, 1),
        "curl_s": r(curl_s),
        "curl_mb_per_s": round(curl_rate, 1),
        "archiver_wall_s": r(proc.wall_s),
        "archiver_startup_s": r(proc.startup_s),
        "archiver_mb_per_s": round(archiver_rate, 1),
        "archiver_cpu_s": r(proc.cpu_s),
        "ratio": r(archiver_rate / curl_rate),
        "ratio_after_startup": r(curl_s / after),
        "archiver_peak_rss_mb": r(proc.peak_rss_mb, 1),
        "load": load(),
    }


if __name__ == "__main__":
    main()
