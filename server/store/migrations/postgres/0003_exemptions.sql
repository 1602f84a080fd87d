-- PostgreSQL version of ../sqlite/0003_exemptions.sql: the same tables, columns,
-- constraints and indexes by name (TestSchemaSameOnBothDialects).
-- 0003_exemptions: helpdesk exemptions, write access to one device on one
-- terminal for a bounded time.
--
-- Same conventions as 0001_init: BIGINT nanosecond times, NULL means "not
-- set", BLOB becomes BYTEA on PostgreSQL. Never edit this file once
-- released: add a new numbered migration instead.

-- source 'online': signed by the collector and pushed to the agent; token
-- holds the SignedExemption (marshalled protobuf) exactly as pushed.
-- source 'offline': a response code read out to a cut-off terminal; no
-- token, and the challenge it answered, which is answered once per
-- terminal (the UNIQUE constraint; NULLs never collide).
-- serial is '' for a device without a serial number, which only an
-- explicit, recorded override (allow_no_serial) may exempt.
-- terminal_id is checked by the store (no foreign key: see server_events
-- in 0002).
CREATE TABLE exemptions (
    id               TEXT   NOT NULL PRIMARY KEY,
    terminal_id      TEXT   NOT NULL,
    vendor_id        TEXT   NOT NULL,
    product_id       TEXT   NOT NULL,
    serial           TEXT   NOT NULL DEFAULT '',
    allow_no_serial  BIGINT NOT NULL DEFAULT 0 CHECK (allow_no_serial IN (0, 1)),
    not_before       BIGINT NOT NULL,
    not_after        BIGINT NOT NULL,
    duration_seconds BIGINT NOT NULL CHECK (duration_seconds > 0),
    issuer           TEXT   NOT NULL,
    reason           TEXT   NOT NULL DEFAULT '',
    ticket           TEXT   NOT NULL DEFAULT '',
    source           TEXT   NOT NULL CHECK (source IN ('online', 'offline')),
    challenge        TEXT,
    issued_at        BIGINT NOT NULL,
    delivered_at     BIGINT,
    revoked_at       BIGINT,
    revoked_by       TEXT   NOT NULL DEFAULT '',
    revoke_reason    TEXT   NOT NULL DEFAULT '',
    token            BYTEA,                       -- SignedExemption, marshalled protobuf
    CHECK (not_after > not_before),
    CHECK (serial <> '' OR allow_no_serial = 1),
    CHECK ((source = 'online' AND token IS NOT NULL AND challenge IS NULL)
        OR (source = 'offline' AND token IS NULL AND challenge IS NOT NULL)),
    UNIQUE (terminal_id, challenge)
);

-- The set in force for a terminal (terminal_id = ? AND not_after > now),
-- exemptions in force anywhere, and lists newest first.
CREATE INDEX exemptions_terminal_end ON exemptions (terminal_id, not_after);
CREATE INDEX exemptions_end ON exemptions (not_after);
CREATE INDEX exemptions_issued ON exemptions (issued_at, id);
