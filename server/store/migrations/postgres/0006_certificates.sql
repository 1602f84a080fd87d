-- PostgreSQL version of ../sqlite/0006_certificates.sql: the same tables, columns,
-- constraints and indexes by name (TestSchemaSameOnBothDialects).
-- 0006_certificates: a renewal is recorded with its time, and a terminal's
-- older certificates retire once a newer one has been used.
--
-- issued_at is NULL for certificates issued before this migration and for
-- enrollment certificates: their not_before stands in for it (it is at
-- most five minutes earlier). first_used_at is the first authenticated call
-- with the certificate; retired_at is when a newer certificate of the same
-- terminal replaced it (used, or issued by a later renewal while it was
-- never used); replaced_by names that certificate.

ALTER TABLE certificates ADD COLUMN issued_at BIGINT;
ALTER TABLE certificates ADD COLUMN first_used_at BIGINT;
ALTER TABLE certificates ADD COLUMN retired_at BIGINT;
ALTER TABLE certificates ADD COLUMN replaced_by TEXT;
