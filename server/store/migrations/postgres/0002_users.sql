-- PostgreSQL version of ../sqlite/0002_users.sql: the same tables, columns,
-- constraints and indexes by name (TestSchemaSameOnBothDialects).
-- 0002_users: TOTP login users, their recovery codes, and events the
-- collector records itself (login verifications).
--
-- Same conventions as 0001_init: BIGINT nanosecond times, NULL means "not
-- set", BLOB becomes BYTEA and server_events.id (INTEGER PRIMARY KEY)
-- becomes BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY on PostgreSQL.
-- Never edit this file once released: add a new numbered migration instead.

-- last_step is the last accepted TOTP time step (0: none yet). It only ever
-- grows, by compare-and-set, so a code is never accepted twice.
CREATE TABLE users (
    name            TEXT   NOT NULL PRIMARY KEY,
    state           TEXT   NOT NULL CHECK (state IN ('pending', 'active')),
    secret_sealed   BYTEA   NOT NULL,             -- AES-GCM, sealed by the caller
    algorithm       TEXT   NOT NULL CHECK (algorithm IN ('SHA1', 'SHA256', 'SHA512')),
    digits          BIGINT NOT NULL CHECK (digits IN (6, 8)),
    period          BIGINT NOT NULL CHECK (period BETWEEN 15 AND 120), -- seconds
    source          TEXT   NOT NULL CHECK (source IN ('enrolled', 'imported')),
    token_serial    TEXT   NOT NULL DEFAULT '',
    last_step       BIGINT NOT NULL DEFAULT 0 CHECK (last_step >= 0),
    clock_offset    BIGINT NOT NULL DEFAULT 0,   -- in steps
    failures        BIGINT NOT NULL DEFAULT 0 CHECK (failures >= 0),
    locked_at       BIGINT,
    last_failure_at BIGINT,
    created_at      BIGINT NOT NULL,
    created_by      TEXT   NOT NULL DEFAULT '',
    confirmed_at    BIGINT,
    last_login_at   BIGINT
);

-- Only hashes are stored. The store deletes a user's codes explicitly with
-- the user; the cascade keeps a manual DELETE from leaving orphans.
CREATE TABLE recovery_codes (
    user_name TEXT   NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    hash      BYTEA   NOT NULL,
    used_at   BIGINT,
    PRIMARY KEY (user_name, hash)
);

-- Events the collector observes about a terminal, listed with the agents'
-- events. received_at equals occurred_at; it exists so that both tables
-- are listed by the same column. terminal_id is checked by the store in
-- the writing transaction, not by a foreign key: with one, every report
-- (which updates terminals.last_seen_at) cost SQLite ~17 % of the
-- collector's ingest rate (BenchmarkIngest, measured).
CREATE TABLE server_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    terminal_id TEXT   NOT NULL,
    occurred_at BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    type        TEXT   NOT NULL,
    severity    BIGINT NOT NULL DEFAULT 0,
    message     TEXT   NOT NULL DEFAULT '',
    data        BYTEA                             -- Event, marshalled protobuf
);

CREATE INDEX server_events_received ON server_events (received_at, id);
CREATE INDEX server_events_terminal_received ON server_events (terminal_id, received_at, id);
