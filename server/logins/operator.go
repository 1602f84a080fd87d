package logins

import (
	"fmt"
	"strings"
	"time"

	"github.com/mnguard/mnguard/server/store"
)

// Operator is the operator who asks for a change: the change's audit entry
// names them, and so does the notice a user gets about codes issued for
// them.
type Operator struct {
	Name string
	Role string // store.RoleAdmin, store.RoleHelpdesk, ...
	// Actor is how the audit log names them, e.g. "sato (helpdesk, token)";
	// Name if empty.
	Actor string
}

// audit is the audit entry of an action of op at now.
func (op Operator) audit(now time.Time, action, target, detail string) store.AuditEntry {
	actor := op.Actor
	if actor == "" {
		actor = op.Name
	}
	return store.AuditEntry{Time: now, Actor: actor, Action: action, Target: target, Detail: detail}
}

// title names op for a user: "administrator sato", "helpdesk operator ito".
func (op Operator) title() string {
	switch op.Role {
	case store.RoleAdmin:
		return "administrator " + op.Name
	case store.RoleHelpdesk:
		return "helpdesk operator " + op.Name
	}
	return "operator " + op.Name
}

// noticeTime is when, for a notice: local time to the minute, with the zone.
func noticeTime(t time.Time) string { return t.Local().Format("2006-01-02 15:04 MST") }

// Notices a user gets at the next successful login, about codes an
// operator issued for them.
func recoveryNotice(now time.Time, op Operator) string {
	return fmt.Sprintf("New recovery codes were issued for you on %s by %s. If you did not ask for them, call your administrator.",
		noticeTime(now), op.title())
}

func resetNotice(now time.Time, op Operator) string {
	return fmt.Sprintf("Your TOTP token was reset and new recovery codes were issued for you on %s by %s. If you did not ask for this, call your administrator.",
		noticeTime(now), op.title())
}

func offlineNotice(now time.Time, op Operator, terminal string) string {
	return fmt.Sprintf("An offline login code for terminal %s was issued for you on %s by %s. If you did not ask for it, call your administrator.",
		terminal, noticeTime(now), op.title())
}

// maxLoginMessage is the longest message the agent passes on to PAM (its
// mfa.MaxMessage): it cuts anything longer.
const maxLoginMessage = 512

// withNotices appends the pending notices (one a line, oldest first) to a
// login's message, on one line as the PAM module shows it. What does not
// fit in maxLoginMessage bytes is left out from the oldest on, and the
// message says how many notices it left out.
func withNotices(msg, notices string) string {
	if notices == "" {
		return msg
	}
	ns := strings.Split(notices, "\n")
	for skipped := 0; skipped <= len(ns); skipped++ {
		out := msg + ". " + strings.Join(ns[skipped:], " ")
		if skipped == len(ns) {
			out = msg + "."
		}
		if skipped > 0 {
			out += fmt.Sprintf(" %d more notices of codes issued for you: ask your administrator.", skipped)
		}
		if len(out) <= maxLoginMessage {
			return out
		}
	}
	return msg
}
