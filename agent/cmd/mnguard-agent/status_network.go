package main

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/mnguard/mnguard/agent/state"
)

// networkLines prints the segment-isolation check from status.json: the
// network policy in force (or why the last one pushed was refused),
// whether enforcement is in place, and what breaks isolation now. It
// returns false when the agent fails at its part: a policy refused, or
// enforcement asked for and not in place. Findings themselves are the
// collector's compliance finding, shown but not the agent's fault.
func networkLines(w io.Writer, n *state.NetworkStatus, now time.Time) bool {
	line := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%-12s %s\n", label+":", printable(fmt.Sprintf(format, args...)))
	}
	if n == nil {
		line("Network", "not checked yet")
		return true
	}
	ok := true
	if n.PolicyError != "" {
		line("Net policy", "REFUSED the collector's last network policy, the one before stays in force: %s", n.PolicyError)
		ok = false
	}
	switch {
	case n.PolicyVersion == "":
		line("Network", "no network policy from the collector: inventory only (USB and wireless adapters are still findings)")
	case !n.EnforceRequested:
		line("Network", "policy %s, checked and reported, not enforced (the policy does not ask for it)", n.PolicyVersion)
	case n.EnforceInPlace:
		detail := n.Mechanism
		if n.Repairs > 0 {
			detail += fmt.Sprintf("; drift repaired %d times", n.Repairs)
		}
		line("Network", "policy %s, enforced: rules in place (%s)", n.PolicyVersion, detail)
	default:
		why := n.EnforceDetail
		if why == "" {
			why = "no reason given"
		}
		line("Network", "policy %s, enforcement NOT in place: %s", n.PolicyVersion, why)
		ok = false
	}
	switch {
	case len(n.ScanErrors) > 0:
		line("Net scan", "INCOMPLETE, isolation not proven: %s", strings.Join(n.ScanErrors, "; "))
	case !n.LastScan.IsZero():
		line("Net scan", "%s", when(n.LastScan, now))
	}
	if n.Findings == 0 {
		line("Findings", "none: isolated")
		return ok
	}
	line("Findings", "%d break isolation (mnguardctl terminals show lists them all)", n.Findings)
	for _, f := range n.FirstFindings {
		who := ""
		if f.Process != "" || f.PID != 0 {
			who = fmt.Sprintf(" (%s pid %d", f.Process, f.PID)
			if f.User != "" {
				who += " user " + f.User
			}
			who += ")"
		}
		// Details are longer than the labels: not aligned, as the PAM
		// services.
		fmt.Fprintf(w, "  %s: %s%s\n", printable(f.Kind), printable(f.Detail), printable(who))
	}
	if more := n.Findings - len(n.FirstFindings); more > 0 {
		fmt.Fprintf(w, "  and %d more\n", more)
	}
	return ok
}

// printable replaces control characters (a process may name itself with
// escape sequences or newlines) so that status cannot be made to lie.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return '?'
		}
		return r
	}, s)
}
