-- PostgreSQL version of ../sqlite/0005_sealed_keys_notices.sql: the same tables, columns,
-- constraints and indexes by name (TestSchemaSameOnBothDialects).
-- 0005_sealed_keys_notices: terminals' offline keys sealed at rest, and a
-- notice for a user about codes an operator issued for them.
--
-- Same conventions as 0001_init. Never edit this file once released: add a
-- new numbered migration instead.

-- offline_key_sealed = 1: offline_key is AES-256-GCM under the data
-- directory's key (totp.key), bound to the terminal ID. Rows written before
-- this migration hold the key in plain text (0); the collector seals them
-- when it opens the store with its key, all in one transaction.
ALTER TABLE terminals ADD COLUMN offline_key_sealed BIGINT NOT NULL DEFAULT 0 CHECK (offline_key_sealed IN (0, 1));

-- pending_notice: what the user is told at the next successful login
-- about codes issued for them (recovery codes, offline login codes), one
-- notice a line; '' when there is none. Cleared by that login.
ALTER TABLE users ADD COLUMN pending_notice TEXT NOT NULL DEFAULT '';
