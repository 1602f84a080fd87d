-- PostgreSQL version of ../sqlite/0007_tokens.sql: the same tables, columns,
-- constraints and indexes by name (TestSchemaSameOnBothDialects).
-- 0007_tokens: HOTP (RFC 4226) hardware tokens, key expiry, and imported
-- tokens that belong to no user yet.
--
-- Same conventions as 0001_init: BIGINT nanosecond times, NULL means "not
-- set", BLOB becomes BYTEA on PostgreSQL. Never edit this file once
-- released: add a new numbered migration instead.

-- kind: 'totp' (RFC 6238) or 'hotp' (RFC 4226). An HOTP user's period
-- column holds 30, which 0002's check demands and nothing reads.
-- counter: an HOTP token's next expected counter. Like last_step it only
-- grows, by compare-and-set, so a code is never accepted twice.
-- not_after: when the token's key expires (PSKC ExpiryDate); NULL: never.
ALTER TABLE users ADD COLUMN kind TEXT NOT NULL DEFAULT 'totp' CHECK (kind IN ('totp', 'hotp'));
ALTER TABLE users ADD COLUMN counter BIGINT NOT NULL DEFAULT 0 CHECK (counter >= 0);
ALTER TABLE users ADD COLUMN not_after BIGINT;

-- Imports check that a serial belongs to one user or unassigned token.
CREATE INDEX users_token_serial ON users (token_serial);

-- Imported hardware tokens that belong to no user yet (the seed file named
-- none). They log nobody in; assigning one moves it to users. The secret
-- is sealed for "token:SERIAL" and sealed again for the user on
-- assignment.
CREATE TABLE hardware_tokens (
    serial        TEXT   NOT NULL PRIMARY KEY,
    kind          TEXT   NOT NULL CHECK (kind IN ('totp', 'hotp')),
    secret_sealed BYTEA   NOT NULL,
    algorithm     TEXT   NOT NULL CHECK (algorithm IN ('SHA1', 'SHA256', 'SHA512')),
    digits        BIGINT NOT NULL CHECK (digits IN (6, 8)),
    period        BIGINT NOT NULL CHECK (period = 0 OR period BETWEEN 15 AND 120), -- 0 for HOTP
    counter       BIGINT NOT NULL DEFAULT 0 CHECK (counter >= 0),
    not_after     BIGINT,
    created_at    BIGINT NOT NULL,
    created_by    TEXT   NOT NULL DEFAULT ''
);
