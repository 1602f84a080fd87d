package report

import (
	"testing"

	"github.com/mnguard/mnguard/server/logins"
)

// TestEventNames keeps the names the report reads in step with the
// collector's packages that write them. (The agent's names cannot be
// imported here: agent and server never import each other.)
func TestEventNames(t *testing.T) {
	if eventLoginVerify != logins.EventType {
		t.Errorf("login event type %q, logins writes %q", eventLoginVerify, logins.EventType)
	}
}
