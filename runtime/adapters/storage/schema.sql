-- DATA_DIR/runtime.db, schema version 1 (PRAGMA user_version = 1).
-- Applied by runtime.adapters.storage.sqlite.migrate inside one BEGIN IMMEDIATE transaction.
-- Every statement is idempotent (IF NOT EXISTS). Times are epoch seconds (REAL); JSON columns are TEXT
-- written by orjson. `seq` is the rowid: insertion order, so "newest first" is ORDER BY seq DESC.

-- The device repository plus the state its workflows keep. The access keys are stored (the sentinel
-- checks them) but the admin API never shows them (Device.public_view).
CREATE TABLE IF NOT EXISTS devices (
    device_id            TEXT PRIMARY KEY,
    device_configuration TEXT NOT NULL,
    name                 TEXT NOT NULL DEFAULT '',
    device_type          TEXT,
    primary_access_key   TEXT,
    secondary_access_key TEXT,
    status               TEXT NOT NULL DEFAULT 'New',
    properties           TEXT NOT NULL DEFAULT '{}',
    attributes           TEXT NOT NULL DEFAULT '{}',
    state_machines       TEXT NOT NULL DEFAULT '{}',
    property_bag         TEXT NOT NULL DEFAULT '{}',
    latitude             REAL,
    longitude            REAL,
    last_seen            REAL,
    created_at           REAL,
    updated_at           REAL
);

-- One row per processed message (CONTRACT §4 /messages). Lean: no payload.
CREATE TABLE IF NOT EXISTS messages (
    seq           INTEGER PRIMARY KEY,
    id            TEXT NOT NULL,
    received_at   REAL NOT NULL,
    listener      TEXT NOT NULL,
    status        TEXT NOT NULL,
    device_id     TEXT,
    message_id    TEXT,
    stage         TEXT,
    error         TEXT,
    processing_ms REAL NOT NULL DEFAULT 0,
    kind          TEXT NOT NULL DEFAULT 'Regular',
    detail        TEXT
);
CREATE INDEX IF NOT EXISTS messages_device_received ON messages (device_id, received_at);
-- no index on status: dead letters are their own table, and nothing reads messages by status

-- Failed records again, with what replay needs (raw payload, topic, path, headers). Kept apart from
-- `messages` so that dead letters have their own retention and outlive the lean records.
CREATE TABLE IF NOT EXISTS deadletters (
    seq           INTEGER PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    received_at   REAL NOT NULL,
    listener      TEXT NOT NULL,
    status        TEXT NOT NULL,
    device_id     TEXT,
    message_id    TEXT,
    stage         TEXT,
    error         TEXT,
    processing_ms REAL NOT NULL DEFAULT 0,
    kind          TEXT NOT NULL DEFAULT 'Regular',
    detail        TEXT,
    payload       BLOB,
    topic         TEXT,
    path          TEXT,
    headers       TEXT,
    replayed_at   REAL
);

-- Instance state transitions (CONTRACT §4 /events).
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY,
    at         REAL NOT NULL,
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    reason     TEXT
);

-- The runtime's own log lines (the SQLite log sink).
CREATE TABLE IF NOT EXISTS logs (
    seq    INTEGER PRIMARY KEY,
    at     REAL NOT NULL,
    level  TEXT NOT NULL,
    event  TEXT NOT NULL,
    fields TEXT NOT NULL DEFAULT '{}'
);

-- Cloud working storage: rows leave only when the sink acknowledged them (CONTRACT §8).
-- AUTOINCREMENT so that an id is never handed out twice, even after the newest row was acked.
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    payload    BLOB NOT NULL,
    created_at REAL NOT NULL
);
