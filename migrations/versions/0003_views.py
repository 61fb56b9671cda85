"""Views for analysts: credits_by_day, task_summary, event_counts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

The three views mean the same on SQLite and PostgreSQL (docs/analysts.md documents them
column by column). Where the two databases spell a function differently (dates, JSON,
interval arithmetic), the SQL is chosen per dialect; the column names, units and the
rules behind each value are identical.

Types: on PostgreSQL ``day`` is a DATE, times are ``timestamptz``, counts and credits are
BIGINT and ``usd`` is NUMERIC(20,2). SQLite has no such types: ``day`` is the text
'YYYY-MM-DD', times are the text 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC) as SQLAlchemy stores
them, counts and credits are INTEGER and ``usd`` is REAL rounded to cents.

A later migration that rebuilds ``tasks``, ``task_events`` or ``artifacts`` (SQLite's
batch mode copies and renames tables; PostgreSQL refuses to drop columns a view uses)
must drop these views first and create them again afterwards.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

VIEWS = ("credits_by_day", "task_summary", "event_counts")
TERMINAL = "('done', 'failed', 'cancelled')"


def _usd(credits: str, dialect: str) -> str:
    """US dollars (1 credit = US$0.01), exact cents."""
    if dialect == "postgresql":
        return f"CAST({credits} / 100.0 AS NUMERIC(20, 2))"
    return f"ROUND({credits} / 100.0, 2)"


def _day(timestamp: str, dialect: str) -> str:
    """The UTC calendar date of a stored UTC timestamp."""
    if dialect == "postgresql":
        return f"CAST(({timestamp} AT TIME ZONE 'UTC') AS DATE)"
    return f"date({timestamp})"


def _seconds_between(start: str, end: str, dialect: str) -> str:
    """Seconds from ``start`` to ``end``, rounded to milliseconds (double precision)."""
    if dialect == "postgresql":
        return (
            f"CAST(ROUND(CAST(EXTRACT(EPOCH FROM ({end} - {start})) AS NUMERIC), 3) "
            "AS DOUBLE PRECISION)"
        )
    return f"ROUND((julianday({end}) - julianday({start})) * 86400.0, 3)"


def _output_type(output: str, dialect: str) -> str:
    """The JSON type of the output: string, number, boolean, object, array or null."""
    if dialect == "postgresql":
        return f"jsonb_typeof({output})"
    return (
        f"CASE WHEN json_valid({output}) THEN "
        f"CASE json_type({output}) WHEN 'text' THEN 'string' WHEN 'integer' THEN 'number' "
        "WHEN 'real' THEN 'number' WHEN 'true' THEN 'boolean' WHEN 'false' THEN 'boolean' "
        f"ELSE json_type({output}) END END"
    )


def _output_text(output: str, dialect: str) -> str:
    """The first 200 characters of an output that is a JSON string; NULL otherwise."""
    if dialect == "postgresql":
        return (
            f"CASE WHEN jsonb_typeof({output}) = 'string' THEN LEFT({output} #>> '{{}}', 200) END"
        )
    return (
        f"CASE WHEN json_valid({output}) THEN CASE WHEN json_type({output}) = 'text' "
        f"THEN substr(json_extract({output}, '$'), 1, 200) END END"
    )


def view_sql(dialect: str) -> dict[str, str]:
    """The SELECT behind each view, for ``dialect`` ('sqlite' or 'postgresql')."""
    credits_by_day = f"""
SELECT
    {_day("t.created_at_utc", dialect)} AS day,
    t.status AS status,
    t.device AS device,
    COUNT(*) AS tasks,
    CAST(COALESCE(SUM(t.credits_used), 0) AS BIGINT) AS credits_used,
    {_usd("COALESCE(SUM(t.credits_used), 0)", dialect)} AS usd
FROM tasks t
GROUP BY {_day("t.created_at_utc", dialect)}, t.status, t.device
"""
    task_summary = f"""
SELECT
    t.id AS task_id,
    t.status AS status,
    t.device AS device,
    t.credits_used AS credits_used,
    {_usd("t.credits_used", dialect)} AS usd,
    t.created_at_utc AS created_at_utc,
    {_day("t.created_at_utc", dialect)} AS day,
    t.finalized_at AS finalized_at,
    CASE WHEN t.status IN {TERMINAL}
        THEN {_seconds_between("t.created_at_utc", "e.last_event_utc", dialect)}
    END AS duration_s,
    COALESCE(e.events, 0) AS events,
    e.first_event_utc AS first_event_utc,
    e.last_event_utc AS last_event_utc,
    rec.state AS recording_state,
    dl.state AS downloads_state,
    {_output_type("t.output", dialect)} AS output_type,
    {_output_text("t.output", dialect)} AS output_text
FROM tasks t
LEFT JOIN (
    SELECT
        task_id,
        COUNT(*) AS events,
        MIN(timestamp_utc) AS first_event_utc,
        MAX(timestamp_utc) AS last_event_utc
    FROM task_events
    GROUP BY task_id
) e ON e.task_id = t.id
LEFT JOIN artifacts rec ON rec.task_id = t.id AND rec.kind = 'recording'
LEFT JOIN artifacts dl ON dl.task_id = t.id AND dl.kind = 'downloads'
"""
    event_counts = """
SELECT
    task_id,
    name,
    COUNT(*) AS events,
    MIN(timestamp_utc) AS first_timestamp_utc,
    MAX(timestamp_utc) AS last_timestamp_utc
FROM task_events
GROUP BY task_id, name
"""
    return {
        "credits_by_day": credits_by_day,
        "task_summary": task_summary,
        "event_counts": event_counts,
    }


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name, select in view_sql(dialect).items():
        op.execute(f"CREATE VIEW {name} AS {select.strip()}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
