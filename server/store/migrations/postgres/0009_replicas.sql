-- Replicas: login delays that hold across collectors. Each row is the
-- time until which a subject's (a TOTP user's, an operator's) next
-- delayed attempt waits: every delayed attempt reserves the next slot,
-- whichever replica it reaches (DB.ReserveLoginSlot).
CREATE TABLE login_slots (
	subject TEXT   NOT NULL PRIMARY KEY,
	next_at BIGINT NOT NULL
);
