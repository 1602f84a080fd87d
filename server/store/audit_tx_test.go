package store

// tAudit is the audit entry the tests pass with a change.
var tAudit = AuditEntry{Actor: "test (admin, token)", Action: "test.change"}

// tUnlock audits an unlock in the tests.
func tUnlock(User) AuditEntry { return tAudit }
