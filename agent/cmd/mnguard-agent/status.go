package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/mnguard/mnguard/agent/config"
	"github.com/mnguard/mnguard/agent/daemon"
	"github.com/mnguard/mnguard/agent/exemptions"
	"github.com/mnguard/mnguard/agent/media"
	"github.com/mnguard/mnguard/agent/state"
)

// printStatus says, in plain words, whether the agent is enrolled, running,
// connected and reporting. It returns false when something needs attention.
func printStatus(w io.Writer, cfg config.Config, configPath string) bool {
	dir := state.Dir(cfg.StateDir)
	now := time.Now()
	ok := true
	line := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%-12s %s\n", label+":", fmt.Sprintf(format, args...))
	}
	id, err := dir.LoadIdentity()
	switch {
	case errors.Is(err, state.ErrNotEnrolled):
		line("Enrollment", "not enrolled (state directory %s)", cfg.StateDir)
		line("Next step", "mnguard-agent enroll --server HOST:PORT --token T --ca-pin sha256:HEX")
		return false
	case err != nil:
		line("Enrollment", "state unreadable: %v", err)
		return false
	}
	server := id.Server
	if len(cfg.Server) > 0 {
		server = cfg.Server.String()
	}
	line("Enrollment", "enrolled as terminal %s with collector %s since %s", id.TerminalID, server, when(id.EnrolledAt, now))
	cert := id.Cert.NotAfter
	if now.After(cert) {
		line("Certificate", "EXPIRED at %s: enroll again", when(cert, now))
		ok = false
	} else {
		line("Certificate", "valid until %s", when(cert, now))
	}
	line("Service", "%s", serviceState(cfg, configPath))
	if runtime.GOOS == "linux" {
		udev, udisks := media.PlatformLayers()
		word := func(b bool) string {
			if b {
				return "installed"
			}
			return "MISSING"
		}
		line("Media rules", "udev hook %s, udisks read-only rule %s (without the agent running)", word(udev), word(udisks))
	}

	st, err := dir.ReadStatus()
	if errors.Is(err, os.ErrNotExist) {
		line("Agent", "has never run with this state directory")
		return false
	}
	if err != nil {
		line("Agent", "status unreadable: %v", err)
		return false
	}
	stale := now.Sub(st.UpdatedAt) > 30*time.Second
	switch {
	case st.Stopped:
		line("Agent", "stopped at %s", when(st.UpdatedAt, now))
		ok = false
	case stale:
		line("Agent", "not running: last sign of life %s (pid %d)", when(st.UpdatedAt, now), st.PID)
		ok = false
	default:
		line("Agent", "running since %s (pid %d)", when(st.StartedAt, now), st.PID)
	}
	switch {
	case st.Connected && !stale && !st.Stopped && st.Collector != "":
		line("Connection", "connected since %s to %s", when(st.ConnectedSince, now), st.Collector)
	case st.Connected && !stale && !st.Stopped:
		line("Connection", "connected since %s", when(st.ConnectedSince, now))
	case st.LastError != "":
		line("Connection", "not connected: %s (%s)", st.LastError, when(st.LastErrorAt, now))
		ok = false
	default:
		line("Connection", "not connected")
		ok = false
	}
	if st.LastReportAt.IsZero() {
		line("Last report", "none delivered yet")
		ok = false
	} else {
		line("Last report", "%s; reports at least every %s", when(st.LastReportAt, now), st.ReportInterval)
	}
	line("Events", "%d waiting to be delivered", st.PendingEvents)
	if st.Failovers > 0 {
		line("Failovers", "%d moves to another collector address since the agent started", st.Failovers)
	}
	if !spoolLines(line, st.Spool) {
		ok = false
	}
	if st.PolicyVersion != "" {
		line("Policy", "%s", st.PolicyVersion)
	}
	if !loginGate(w, cfg.MFA) {
		ok = false
	}
	if !networkLines(w, st.Network, now) {
		ok = false
	}
	exemptionsLine(line, filepath.Join(cfg.StateDir, exemptions.FileName), now)
	return ok
}

// exemptionsLine summarizes the exemptions the agent holds, from its state
// file.
func exemptionsLine(line func(label, format string, args ...any), path string, now time.Time) {
	infos, err := exemptions.ReadFile(path, now)
	switch {
	case errors.Is(err, os.ErrNotExist):
		line("Exemptions", "none")
		return
	case err != nil:
		line("Exemptions", "state unreadable (%v): none is in force", err)
		return
	}
	var live []string
	for _, i := range infos {
		if i.State == "ended" {
			continue
		}
		live = append(live, fmt.Sprintf("%s %s until %s", i.Device, i.State, i.NotAfter.Local().Format("15:04")))
	}
	if len(live) == 0 {
		line("Exemptions", "none in force")
		return
	}
	line("Exemptions", "%s (mnguard-agent exemption list)", strings.Join(live, "; "))
}

// loginGate prints whether the login gate's socket is served (by connecting
// to it) and, where logins go through PAM, whether each configured service
// requires pam_mnguard. It returns false when the socket is not served:
// pam_mnguard then refuses every login. PAM stacks without the module are
// shown but are the collector's compliance finding, not the agent's fault.
func loginGate(w io.Writer, cfg config.MFA) bool {
	line := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%-12s %s\n", label+":", fmt.Sprintf(format, args...))
	}
	if runtime.GOOS == "windows" {
		line("Login gate", "not on Windows yet (logon needs the credential provider, a later stage)")
		return true
	}
	serving := false
	if cfg.Socket == "" {
		line("Login gate", "OFF: mfa.socket is empty, so logins through pam_mnguard are refused")
	} else if c, err := net.DialTimeout("unix", cfg.Socket, time.Second); err != nil {
		line("Login gate", "NOT serving %s (%v): logins through pam_mnguard are refused", cfg.Socket, errors.Unwrap(err))
	} else {
		c.Close()
		serving = true
		line("Login gate", "serving %s", cfg.Socket)
	}
	p := daemon.MFAPosture(cfg, serving)
	if p.GetEnforced() {
		line("MFA", "enforced")
	} else {
		line("MFA", "NOT enforced: %s", p.GetReason())
	}
	for _, s := range p.GetServices() {
		// PAM service names are longer than the labels: not aligned.
		switch {
		case !s.GetPresent():
			fmt.Fprintf(w, "  PAM %s: not installed\n", s.GetName())
		case s.GetMfaRequired():
			fmt.Fprintf(w, "  PAM %s: requires pam_mnguard\n", s.GetName())
		default:
			fmt.Fprintf(w, "  PAM %s: DOES NOT require pam_mnguard: %s\n", s.GetName(), s.GetReason())
		}
	}
	return serving
}

// when renders a time as "2026-11-25 17:26:54 UTC (12s ago)".
func when(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t).Round(time.Second)
	rel := span(d) + " ago"
	if d < 0 {
		rel = "in " + span(-d)
	}
	return fmt.Sprintf("%s (%s)", t.Local().Format("2006-01-02 15:04:05 MST"), rel)
}

// span renders a duration for people: seconds to hours as Go does, then days.
func span(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.String()
}

// spoolLines prints the spool's fill and every loss it knows of; false
// when events were lost or cannot be stored now.
func spoolLines(line func(label, format string, args ...any), sp *state.SpoolStatus) bool {
	if sp == nil {
		return true
	}
	ok := true
	posture := ""
	if sp.PostureKept {
		posture = "; a posture snapshot awaits acknowledgement"
	}
	line("Spool", "%d of %d KiB used (at most %d events)%s", sp.Bytes>>10, sp.MaxBytes>>10, sp.MaxEvents, posture)
	if sp.SetAside != "" {
		line("Spool", "DAMAGED file found at start, kept as %s (%s); a new spool was started", sp.SetAside, sp.SetAsideReason)
		ok = false
	}
	if sp.WriteFailed > 0 {
		line("Spool", "%d events could not be written since start: %s", sp.WriteFailed, sp.WriteError)
		ok = false
	}
	if sp.Dropped > 0 || sp.Corrupt > 0 {
		line("Spool", "%d events dropped when full, %d damaged records removed (reported to the collector)", sp.Dropped, sp.Corrupt)
		ok = false
	}
	if sp.PostureDropped > 0 {
		line("Spool", "%d posture snapshots dropped when full (a new one is sent at every report)", sp.PostureDropped)
	}
	return ok
}
