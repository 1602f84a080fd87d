-- PostgreSQL version of ../sqlite/0001_init.sql: the same tables, columns,
-- constraints and indexes by name (TestSchemaSameOnBothDialects).
-- 0001_init: the collector's initial schema.
--
-- Written to be shared with the PostgreSQL backend nearly verbatim (this
-- file is that version):
--   * every integer column is BIGINT, every time is BIGINT nanoseconds since
--     the Unix epoch (UTC), and NULL means "not set";
--   * BLOB becomes BYTEA;
--   * posture_history.id (INTEGER PRIMARY KEY, SQLite's rowid) becomes
--     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
--   * the audit_log triggers are rewritten as plpgsql triggers.
-- No other SQLite-only syntax is used. Never edit this file once released:
-- add a new numbered migration instead.

CREATE TABLE enrollment_tokens (
    id         TEXT   NOT NULL PRIMARY KEY,
    hash       BYTEA   NOT NULL UNIQUE,           -- SHA-256 of the secret
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    uses       BIGINT NOT NULL CHECK (uses >= 0),
    uses_left  BIGINT NOT NULL CHECK (uses_left >= 0 AND uses_left <= uses),
    created_by TEXT   NOT NULL DEFAULT '',
    note       TEXT   NOT NULL DEFAULT ''
);

CREATE TABLE terminals (
    id            TEXT   NOT NULL PRIMARY KEY,
    host          BYTEA,                          -- HostFacts, marshalled protobuf
    hostname      TEXT   NOT NULL DEFAULT '',
    state         TEXT   NOT NULL CHECK (state IN ('active', 'revoked')),
    enrolled_at   BIGINT NOT NULL,
    last_seen_at  BIGINT,
    revoked_at    BIGINT,
    revoke_reason TEXT   NOT NULL DEFAULT '',
    offline_key   BYTEA,
    enrolled_with TEXT   REFERENCES enrollment_tokens (id) -- the token it used
);

CREATE INDEX terminals_hostname ON terminals (hostname, id);

CREATE TABLE certificates (
    serial      TEXT   NOT NULL PRIMARY KEY,     -- lowercase hex
    terminal_id TEXT   NOT NULL REFERENCES terminals (id),
    not_before  BIGINT NOT NULL,
    not_after   BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE INDEX certificates_terminal ON certificates (terminal_id, not_after, serial);

-- The latest posture of each terminal. Large blobs go last: SQLite reads
-- through a row's overflow pages to reach the columns after them.
CREATE TABLE postures (
    terminal_id  TEXT   NOT NULL PRIMARY KEY REFERENCES terminals (id),
    received_at  BIGINT NOT NULL,
    collected_at BIGINT,
    fingerprint  BYTEA   NOT NULL,
    posture      BYTEA   NOT NULL                 -- Posture, marshalled protobuf
);

-- One row per change of a terminal's posture fingerprint.
CREATE TABLE posture_history (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    terminal_id  TEXT   NOT NULL REFERENCES terminals (id),
    received_at  BIGINT NOT NULL,
    collected_at BIGINT,
    fingerprint  BYTEA   NOT NULL,
    posture      BYTEA   NOT NULL
);

CREATE INDEX posture_history_terminal ON posture_history (terminal_id, received_at);

-- Each (terminal_id, seq) is stored once: agents resend until acknowledged.
CREATE TABLE events (
    terminal_id TEXT   NOT NULL REFERENCES terminals (id),
    seq         BIGINT NOT NULL CHECK (seq >= 0),
    occurred_at BIGINT,
    received_at BIGINT NOT NULL,
    type        TEXT   NOT NULL DEFAULT '',
    severity    BIGINT NOT NULL DEFAULT 0,
    message     TEXT   NOT NULL DEFAULT '',
    data        BYTEA,                            -- Event, marshalled protobuf
    PRIMARY KEY (terminal_id, seq)
);

CREATE INDEX events_received ON events (received_at, seq);
CREATE INDEX events_terminal_received ON events (terminal_id, received_at, seq);

CREATE TABLE operator_tokens (
    id         TEXT   NOT NULL PRIMARY KEY,
    name       TEXT   NOT NULL,
    role       TEXT   NOT NULL CHECK (role IN ('admin', 'helpdesk', 'auditor')),
    hash       BYTEA   NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- Append-only and hash-chained: hash = SHA-256(prev_hash || canonical
-- encoding of the entry), see store.AuditHash. IDs are assigned by the store
-- (last + 1), and prev_hash is UNIQUE, so two entries can never share a
-- predecessor: the chain cannot fork even if a writer misbehaves.
CREATE TABLE audit_log (
    id        BIGINT NOT NULL PRIMARY KEY CHECK (id > 0),
    at        BIGINT NOT NULL,
    actor     TEXT   NOT NULL,
    action    TEXT   NOT NULL,
    target    TEXT   NOT NULL DEFAULT '',
    detail    TEXT   NOT NULL DEFAULT '',
    prev_hash BYTEA   NOT NULL UNIQUE,
    hash      BYTEA   NOT NULL UNIQUE
);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

-- TRUNCATE fires no row trigger: refuse it too.
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
