"""The archive's storage: every SQL statement the archiver runs lives in this package
(the web view's read-only queries in :mod:`archiver.web.queries` aside).

One module per job:

* :mod:`~archiver.store.engines` opens a database URL (SQLite files, read-only opening),
  :mod:`~archiver.store.errors` turns driver errors into the archiver's own,
  :mod:`~archiver.store.migrations` runs Alembic, and :mod:`~archiver.store.database`
  ties them together as :class:`Database` and its transactions;
* :mod:`~archiver.store.schema` is the tables, :mod:`~archiver.store.columns` declares
  which API value goes into which column;
* :mod:`~archiver.store.tasks`, :mod:`~archiver.store.events`,
  :mod:`~archiver.store.state`, :mod:`~archiver.store.runs` and
  :mod:`~archiver.store.status` hold the statements on those rows;
* :mod:`~archiver.store.writer` group-commits the engine's saves, and
  :mod:`~archiver.store.locks` holds the command lock and the task leases.

Nothing here imports the engine: it hands the store its decisions as plain values.
"""

from archiver.store.database import Database

__all__ = ["Database"]
