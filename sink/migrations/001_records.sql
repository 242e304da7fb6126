-- press-collector sink, migration 1: records, quarantine, latest state and status, gaps.
-- Applied by `press-collector sink` (sink/store.py) inside one transaction under an
-- advisory lock, recorded in sink_migration; never edited after release (add 002_...).

CREATE TABLE record (
    host           text        NOT NULL,  -- the line PC (envelope "host")
    press          text        NOT NULL,  -- press id, or "_collector" for collector alarms
    stream         text        NOT NULL,  -- "events" | "telemetry"
    seq            bigint      NOT NULL,  -- +1 per message per (host, press, stream)
    id             uuid        NOT NULL,  -- the message id: a repeat of a seq carries the same
    kind           text        NOT NULL,  -- schema without "press-collector/": setup, telemetry, ...
    schema_version integer     NOT NULL,
    ts             timestamptz NOT NULL,  -- acquisition time (PLC / gauge), from the line PC
    lane           text        NOT NULL,  -- "live" | "replay" (telemetry backlog after an outage)
    context        jsonb       NOT NULL,
    data           jsonb       NOT NULL,
    consumer       text        NOT NULL,  -- client id of the sink that wrote the row
    stored_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (host, press, stream, seq)
);
CREATE INDEX record_ts_brin ON record USING brin (ts);

CREATE VIEW events AS SELECT * FROM record WHERE stream = 'events';
CREATE VIEW telemetry AS SELECT * FROM record WHERE stream = 'telemetry';

-- Messages the sink could not take (not JSON, no envelope, unknown major schema version,
-- a seq reused with another id): kept for inspection, acknowledged, counted.
CREATE TABLE quarantine (
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    topic       text        NOT NULL,
    reason      text        NOT NULL,
    payload     bytea       NOT NULL,
    consumer    text        NOT NULL
);

-- Retained topics: the latest state per press and the status (birth / last will) per
-- collector; a message older than the stored one never overwrites it.
CREATE TABLE press_state (
    host      text        NOT NULL,
    press     text        NOT NULL,
    state     text        NOT NULL,
    ts        timestamptz NOT NULL,
    payload   jsonb       NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (host, press)
);
CREATE TABLE collector_status (
    host      text        PRIMARY KEY,
    status    text        NOT NULL,  -- "online" | "offline" (graceful stop or last will)
    ts        timestamptz NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Holes in seq per (host, press, stream), including one before the first row received
-- (seq starts at 1). While a collector replays its backlog after an outage, the live
-- topic has already jumped ahead: a gap that is still there once the collector's backlog
-- is drained is a loss (docs/sink.md).
CREATE VIEW gaps AS
SELECT host, press, stream, prev + 1 AS first_missing, seq - 1 AS last_missing,
       seq - prev - 1 AS missing
FROM (SELECT host, press, stream, seq,
             coalesce(lag(seq) OVER (PARTITION BY host, press, stream ORDER BY seq), 0) AS prev
      FROM record) s
WHERE seq - prev > 1;

-- One line per (host, press, stream): what arrived, what is missing, how fresh it is.
CREATE VIEW stream_progress AS
SELECT r.host, r.press, r.stream, count(*) AS rows, min(r.seq) AS first_seq,
       max(r.seq) AS last_seq, max(r.seq) - count(*) AS missing, max(r.ts) AS last_ts,
       max(r.stored_at) AS last_stored_at
FROM record r GROUP BY r.host, r.press, r.stream;
