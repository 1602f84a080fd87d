-- PostgreSQL version of ../sqlite/0004_console.sql: the same tables, columns,
-- constraints and indexes by name (TestSchemaSameOnBothDialects).
-- 0004_console: operators (people with a role, a password and TOTP), their
-- web sessions, and the collector's compliance verdict per terminal with
-- its history.
--
-- Same conventions as 0001_init: BIGINT nanosecond times, NULL means "not
-- set", BLOB becomes BYTEA on PostgreSQL, INTEGER PRIMARY KEY becomes
-- BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY. Never edit this file
-- once released: add a new numbered migration instead.

-- password_hash is an argon2id PHC string ('' : no password, no console
-- sign-in); totp_sealed is the operator's TOTP secret, AES-256-GCM under
-- totp.key (NULL: none yet). totp_last_step only grows, by compare-and-set,
-- so a sign-in code is never accepted twice.
CREATE TABLE operators (
    name            TEXT   NOT NULL PRIMARY KEY,
    role            TEXT   NOT NULL CHECK (role IN ('admin', 'helpdesk', 'auditor')),
    password_hash   TEXT   NOT NULL DEFAULT '',
    totp_sealed     BYTEA,
    totp_last_step  BIGINT NOT NULL DEFAULT 0 CHECK (totp_last_step >= 0),
    totp_offset     BIGINT NOT NULL DEFAULT 0,
    failures        BIGINT NOT NULL DEFAULT 0 CHECK (failures >= 0),
    last_failure_at BIGINT,
    locked_at       BIGINT,
    disabled_at     BIGINT,
    language        TEXT   NOT NULL DEFAULT '' CHECK (language IN ('', 'ja', 'en')),
    created_at      BIGINT NOT NULL,
    created_by      TEXT   NOT NULL DEFAULT '',
    last_sign_in_at BIGINT
);

-- Every operator name that holds API tokens becomes an operator, with the
-- most powerful role its tokens had; without a password it signs in to
-- the console only once an admin sets one.
INSERT INTO operators (name, role, created_at, created_by)
SELECT name,
       CASE WHEN SUM(CASE WHEN role = 'admin' THEN 1 ELSE 0 END) > 0 THEN 'admin'
            WHEN SUM(CASE WHEN role = 'helpdesk' THEN 1 ELSE 0 END) > 0 THEN 'helpdesk'
            ELSE 'auditor' END,
       MIN(created_at), 'migration 0004'
FROM operator_tokens GROUP BY name;

-- A token acts in its operator's name with the operator's role at the time
-- of each call; role is kept as it was at creation, for the record.
ALTER TABLE operator_tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE operator_tokens ADD COLUMN note TEXT NOT NULL DEFAULT '';
CREATE INDEX operator_tokens_name ON operator_tokens (name);

-- id_hash is the SHA-256 of the cookie's secret; csrf is the session's
-- anti-forgery token, sent back in every form.
CREATE TABLE web_sessions (
    id_hash      BYTEA   NOT NULL PRIMARY KEY,
    operator     TEXT   NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
    csrf         TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    remote_addr  TEXT   NOT NULL DEFAULT '',
    user_agent   TEXT   NOT NULL DEFAULT ''
);

CREATE INDEX web_sessions_operator ON web_sessions (operator);

-- The latest verdict per terminal, written by the collector's periodic
-- evaluation. Each c_* column is one check's status ('pass', 'fail',
-- 'unknown'); details holds, per check, why and since when (JSON). The
-- other columns are what the console lists and searches without reading
-- posture blobs: search is the lowercased host name, ID, IP addresses and
-- device serials.
CREATE TABLE terminal_compliance (
    terminal_id   TEXT   NOT NULL PRIMARY KEY,
    state         TEXT   NOT NULL CHECK (state IN ('compliant', 'non-compliant', 'stale', 'revoked')),
    state_since   BIGINT NOT NULL,
    offline       BIGINT NOT NULL DEFAULT 0 CHECK (offline IN (0, 1)),
    c_media       TEXT   NOT NULL,
    c_mfa         TEXT   NOT NULL,
    c_network     TEXT   NOT NULL,
    c_fresh       TEXT   NOT NULL,
    c_version     TEXT   NOT NULL,
    c_certificate TEXT   NOT NULL,
    c_exemptions  TEXT   NOT NULL,
    details       TEXT   NOT NULL DEFAULT '{}',
    posture_at    BIGINT,
    agent_version TEXT   NOT NULL DEFAULT '',
    platform      TEXT   NOT NULL DEFAULT '',
    addresses     TEXT   NOT NULL DEFAULT '',
    search        TEXT   NOT NULL DEFAULT '',
    evaluated_at  BIGINT NOT NULL
);

CREATE INDEX terminal_compliance_state ON terminal_compliance (state, terminal_id);
-- Narrow copies of what the overview counts and the terminal list searches,
-- so both read an index rather than the wide rows (10,000 terminals,
-- BenchmarkConsole: the overview's p50 went from 45 ms to 18 ms, a search's
-- from 60 ms to 37 ms).
CREATE INDEX terminal_compliance_counts ON terminal_compliance
    (state, c_media, c_mfa, c_network, c_fresh, c_version, c_certificate, c_exemptions);
CREATE INDEX terminal_compliance_search ON terminal_compliance (search, terminal_id);
CREATE INDEX terminals_state ON terminals (state);

-- One row per stretch of time a terminal failed a check: ended_at NULL
-- while it still fails. The self-inspection report sums them per period.
CREATE TABLE compliance_intervals (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    terminal_id TEXT   NOT NULL,
    check_name  TEXT   NOT NULL,
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT,
    detail      TEXT   NOT NULL DEFAULT '',        -- message key of why (package i18n)
    args        TEXT   NOT NULL DEFAULT '[]',      -- its arguments, JSON array of strings
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);

CREATE INDEX compliance_intervals_open ON compliance_intervals (terminal_id, check_name, ended_at);
CREATE INDEX compliance_intervals_time ON compliance_intervals (started_at, ended_at);

-- Terminals per state, and per failing check, as last evaluated on each day
-- (in the collector's time zone): the overview's 30-day chart.
CREATE TABLE compliance_daily (
    day           TEXT   NOT NULL PRIMARY KEY,   -- YYYY-MM-DD
    compliant     BIGINT NOT NULL DEFAULT 0,
    non_compliant BIGINT NOT NULL DEFAULT 0,
    stale         BIGINT NOT NULL DEFAULT 0,
    failing       TEXT   NOT NULL DEFAULT '{}', -- JSON: check name -> terminals failing it
    updated_at    BIGINT NOT NULL
);

-- The events page filters by type.
CREATE INDEX events_type_received ON events (type, received_at, seq);
CREATE INDEX server_events_type_received ON server_events (type, received_at, id);
