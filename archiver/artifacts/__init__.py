"""Artifacts: copying a task's recording and downloads archive into blob storage.

The Smooth API hands out ``recording_url`` and ``downloads_url`` as presigned links that
expire. With ``--downloads`` the pass that finalizes a terminal task calls
:meth:`ArtifactSync.settle`, which brings each artifact to a final state and records it in
the ``artifacts`` table (one row per task and kind):

* ``""`` from the API: there is no such artifact -> ``absent``.
* ``null``: not available yet -> ``pending`` (``pending_since`` set); ``failed`` once it is
  still null a grace period after the archiver first saw it so.
* a link: streamed (never held whole in memory) through SHA-256 into a temporary blob,
  moved to its final name once size and hash are known -> ``stored``. 403/404/410 from the
  artifact host means the link expired: Get Task is asked again (``downloads=true``) for
  fresh links, a bounded number of times. Connection errors, timeouts, 5xx and truncated
  transfers leave the artifact ``pending`` with ``last_error`` and a back-off
  (``next_attempt_at``); after ``artifact_max_attempts`` attempts it is ``failed``. A link
  that is not http(s), a redirect to anything but http(s), or a body over the size limit
  (enforced while streaming) is ``failed`` at once.
* a stored downloads archive is listed into ``artifact_files`` from the stored zip, never
  extracted; a corrupt or non-zip archive stays stored with the listing error recorded.

The task is finalized only when both artifacts reached a final state (stored, absent,
failed). Presigned query strings never reach the database, logs or messages.
``archiver verify`` re-hashes stored blobs (verify.py); ``--repair`` fetches the bad ones
again with :class:`RepairSettler` (repair.py).

Data flows one way: the engine passes in the task the API returned; this module fetches
the links, writes :mod:`archiver.blobs` and the ``artifacts`` rows.
"""

from __future__ import annotations

from archiver.artifacts.fetch import ArtifactFetcher, Fetched, check_link
from archiver.artifacts.repair import RepairSettler, repair_and_report, repair_artifacts
from archiver.artifacts.settle import ArtifactSync, SettleResult
from archiver.artifacts.states import FINAL_STATES, KINDS, STATES
from archiver.artifacts.verify import (
    Check,
    check_blob,
    verify_and_report,
    verify_blobs,
)
from archiver.artifacts.zips import list_zip
from archiver.store.artifacts import (
    ArtifactRow,
    StoredArtifact,
    artifact_status,
    artifacts_to_verify,
    load_artifacts,
    save_artifact,
    tasks_missing_artifacts,
)

__all__ = [
    "FINAL_STATES",
    "KINDS",
    "STATES",
    "ArtifactFetcher",
    "ArtifactRow",
    "ArtifactSync",
    "Check",
    "Fetched",
    "RepairSettler",
    "SettleResult",
    "StoredArtifact",
    "artifact_status",
    "artifacts_to_verify",
    "check_blob",
    "check_link",
    "list_zip",
    "load_artifacts",
    "repair_and_report",
    "repair_artifacts",
    "save_artifact",
    "tasks_missing_artifacts",
    "verify_and_report",
    "verify_blobs",
]
