"""PostgreSQL side of the sink: migrations, and one transaction per batch.

A batch is written with COPY into a temporary staging table and one
``INSERT ... SELECT ... ON CONFLICT (host, press, stream, seq) DO NOTHING RETURNING``, so
a batch of any size costs three statements and one commit. ``DO NOTHING`` is safe with
several sinks writing at once: a second writer of the same key waits for the first's
transaction and then skips the row (counted as a duplicate). A duplicate key whose
message id differs is not a redelivery but a *reused seq* (a collector's buffer file
replaced, say): it is quarantined with both ids and counted as a conflict.

A batch the database refuses for its data (not for its connection), e.g. a string
PostgreSQL cannot store, is written again row by row, each under a savepoint: the rows
that still fail go to the quarantine with the database's message, the rest are stored.
Nothing of a batch is ever dropped without a row somewhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources

import psycopg
from psycopg import sql

from sink.decode import Latest, Refused, Row

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x7072_6573_7331  # pg_advisory_xact_lock key: one migrator at a time
ROW_COLUMNS = ("host", "press", "stream", "seq", "id", "kind", "schema_version", "ts", "lane",
               "context", "data", "consumer")


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every migration shipped in sink/migrations, in order."""
    out = []
    for entry in resources.files("sink.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            out.append((int(name[:3]), name, entry.read_text(encoding="utf-8")))
    return sorted(out)


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply the migrations not applied yet; returns their file names. Several sinks may
    start at once: the advisory lock lets one apply, the others then find it done."""
    applied_now = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS sink_migration (version integer PRIMARY KEY,"
                     " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        done = {v for (v,) in conn.execute("SELECT version FROM sink_migration")}
        for version, name, text in migrations():
            if version in done:
                continue
            conn.execute(text)  # type: ignore[arg-type]  # our own file, no parameters
            conn.execute("INSERT INTO sink_migration (version, name) VALUES (%s, %s)",
                         (version, name))
            applied_now.append(name)
    for name in applied_now:
        log.info("sink: applied migration %s", name)
    return applied_now


@dataclass
class Written:
    """What one batch did (counters for the sink's stats)."""

    inserted: int = 0
    duplicates: int = 0  # key already stored with the same id: a redelivery, ignored
    conflicts: int = 0  # key already stored with another id: quarantined
    quarantined: int = 0  # refused by decode, conflicts, rows the database refused
    latest: int = 0
    row_errors: list[str] = field(default_factory=list)


class Store:
    """One connection (autocommit off); ``write(...)`` is one transaction."""

    def __init__(self, conn: psycopg.Connection, consumer: str) -> None:
        self.conn = conn
        self.consumer = consumer
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS incoming (LIKE record INCLUDING DEFAULTS)"
                     " ON COMMIT DELETE ROWS")
        conn.commit()

    @classmethod
    def connect(cls, dsn: str, consumer: str) -> Store:
        conn = psycopg.connect(dsn, application_name=f"press-collector-sink {consumer}"[:63])
        migrate(conn)
        return cls(conn, consumer)

    def close(self) -> None:
        self.conn.close()

    def write(self, rows: list[Row], latest: list[Latest], refused: list[Refused]) -> Written:
        """Store a batch in one transaction (committed on return)."""
        out = Written()
        try:
            with self.conn.transaction():
                self._write_rows(rows, out)
                self._write_latest(latest, out)
                self._quarantine(refused, out)
        except psycopg.OperationalError:
            raise  # the connection: the caller reconnects and retries the whole batch
        except psycopg.DatabaseError as exc:
            log.warning("sink: the database refused a batch of %d rows (%s); writing it row by "
                        "row", len(rows), str(exc).strip().splitlines()[0][:200])
            out = Written()
            with self.conn.transaction():
                self._write_rows_one_by_one(rows, out)
                self._write_latest(latest, out)
                self._quarantine(refused, out)
        return out

    def gap_summary(self) -> list[tuple[str, str, str, int, int]]:
        """(host, press, stream, gaps, seq missing) for every stream with a gap."""
        with self.conn.transaction():
            return self.conn.execute(
                "SELECT host, press, stream, count(*), sum(missing) FROM gaps "
                "GROUP BY host, press, stream ORDER BY host, press, stream").fetchall()

    # -- rows ------------------------------------------------------------------------------
    def _write_rows(self, rows: list[Row], out: Written) -> None:
        if not rows:
            return
        cur = self.conn.cursor()
        cols = sql.SQL(", ").join(map(sql.Identifier, ROW_COLUMNS))
        with cur.copy(sql.SQL("COPY incoming ({}) FROM STDIN").format(cols)) as copy:
            for r in rows:
                copy.write_row((r.host, r.press, r.stream, r.seq, r.id, r.kind,
                                r.schema_version, r.ts, r.lane, r.context, r.data,
                                self.consumer))
        cur.execute(sql.SQL("INSERT INTO record ({cols}) SELECT {cols} FROM incoming "
                            "ON CONFLICT (host, press, stream, seq) DO NOTHING "
                            "RETURNING host, press, stream, seq").format(cols=cols))
        stored = set(cur.fetchall())
        out.inserted += len(stored)
        skipped = len(rows) - len(stored)
        if skipped:
            before = out.conflicts
            self._conflicts(cur, out)
            out.duplicates += skipped - (out.conflicts - before)
        cur.execute("DELETE FROM incoming")  # ON COMMIT DELETE ROWS, but a batch may fall back

    def _conflicts(self, cur: psycopg.Cursor, out: Written) -> None:
        cur.execute("SELECT i.host, i.press, i.stream, i.seq, i.id::text, r.id::text "
                    "FROM incoming i JOIN record r USING (host, press, stream, seq) "
                    "WHERE r.id <> i.id")
        for host, press, stream, seq, new_id, old_id in cur.fetchall():
            out.conflicts += 1
            self._quarantine([Refused(
                f"{host}/{press}/{stream}/{seq}",
                f"seq {seq} of {host}/{press}/{stream} reused: stored id {old_id}, this id "
                f"{new_id} (a replaced buffer file?)", b"")], out)

    def _write_rows_one_by_one(self, rows: list[Row], out: Written) -> None:
        for r in rows:
            try:
                with self.conn.transaction():  # a savepoint per row
                    self._write_rows([r], out)
            except psycopg.OperationalError:
                raise
            except psycopg.DatabaseError as exc:
                reason = f"database refused the row: {str(exc).strip().splitlines()[0][:200]}"
                out.row_errors.append(reason)
                self._quarantine([Refused(f"{r.host}/{r.press}/{r.stream}/{r.seq}", reason,
                                          f'{{"context":{r.context},"data":{r.data}}}'.encode())],
                                 out)

    # -- retained --------------------------------------------------------------------------
    def _write_latest(self, latest: list[Latest], out: Written) -> None:
        cur = self.conn.cursor()
        for m in latest:
            if m.what == "state":
                cur.execute(
                    "INSERT INTO press_state (host, press, state, ts, payload) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (host, press) DO UPDATE SET "
                    "state = excluded.state, ts = excluded.ts, payload = excluded.payload, "
                    "stored_at = clock_timestamp() WHERE press_state.ts <= excluded.ts",
                    (m.host, m.press, m.value, m.ts, m.payload))
            else:
                cur.execute(
                    "INSERT INTO collector_status (host, status, ts) VALUES (%s, %s, %s) "
                    "ON CONFLICT (host) DO UPDATE SET status = excluded.status, "
                    "ts = excluded.ts, stored_at = clock_timestamp() "
                    "WHERE collector_status.ts <= excluded.ts", (m.host, m.value, m.ts))
            out.latest += 1

    def _quarantine(self, refused: list[Refused], out: Written) -> None:
        if not refused:
            return
        self.conn.cursor().executemany(
            "INSERT INTO quarantine (topic, reason, payload, consumer) VALUES (%s, %s, %s, %s)",
            [(r.topic, r.reason, r.payload, self.consumer) for r in refused])
        out.quarantined += len(refused)
