package media

// The manager's side of exemptions: a device an exemption names is made
// writable (Exempter.Release), watched for its first write, and made
// read-only again when the exemption ends, gently first (writers are
// warned and get Manager.EndGrace), then per the on_busy policy.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// warnTimeout bounds one warning of the terminal's users.
const warnTimeout = 10 * time.Second

// exemptionFor asks Exempt about d.
func (m *Manager) exemptionFor(d Device) (string, bool) {
	if m.Exempt == nil {
		return "", false
	}
	id, ok := m.Exempt(d)
	if ok && id == "" {
		id = "(no id)"
	}
	return id, ok
}

func exemptAttrs(d Device, id string) map[string]string {
	a := attrs(d)
	a["exemption_id"] = id
	a["device_id"] = d.ID()
	return a
}

// release makes an exempted device writable, or keeps it so. On failure
// the device goes back to read-only. It returns false: the device is not
// protected.
func (m *Manager) release(ctx context.Context, t *tracked, d Device, id string, known bool) bool {
	m.mu.Lock()
	fresh := t.state != StateExempted || t.exemption != id
	failed := t.failedExemption == id
	wasExempt := t.exemption != ""
	m.mu.Unlock()
	if failed {
		return m.endOrEnforce(ctx, t, d, known)
	}
	ex, ok := m.Platform.(Exempter)
	if !ok {
		m.exemptionFailed(t, d, id, fmt.Sprintf("this platform cannot make a device writable: %v", errors.ErrUnsupported))
		return m.endOrEnforce(ctx, t, d, known)
	}
	if !fresh {
		m.checkUsed(t, d, id)
	}
	res, err := ex.Release(ctx, d)
	switch {
	case errors.Is(err, ErrVanished):
		m.detach(d.Name)
		return false
	case err != nil || res.State != StateExempted:
		reason := describe(res.Actions)
		if err != nil {
			reason = err.Error()
		}
		m.exemptionFailed(t, d, id, reason)
		if !wasExempt {
			m.mu.Lock()
			t.exemption = ""
			m.mu.Unlock()
		}
		return m.endOrEnforce(ctx, t, d, known)
	}
	detail := "exemption " + id + ": writable"
	if acts := describe(res.Actions); acts != "" {
		detail += " (" + acts + ")"
	}
	m.mu.Lock()
	t.state, t.exemption, t.failedExemption = StateExempted, id, ""
	t.endingSince, t.nextTry, t.writers = time.Time{}, time.Time{}, ""
	t.warned, t.forced, t.alerted = false, false, false
	if fresh {
		t.detail, t.used, t.writesKnown = detail, false, false
	} else if res.Repaired {
		t.detail = detail
		if t.used {
			t.detail += "; written to"
		}
	}
	m.mu.Unlock()
	switch {
	case fresh:
		m.baseline(t, d)
		a := exemptAttrs(d, id)
		a["actions"] = describe(res.Actions)
		m.log().Warn("removable device writable under an exemption", "device", d.Name, "id", d.ID(), "exemption", id, "actions", a["actions"])
		m.emit(EventExemptionApplied, mnguardv1.Severity_SEVERITY_WARNING, fmt.Sprintf("%s (%s) is writable under exemption %s", d.Name, d.ID(), id), a)
		m.changed()
	case res.Repaired:
		// Something set it read-only again (the udev hook at a "change"
		// event, someone's blockdev --setro, a read-only mount by
		// udisks): the exemption still holds.
		m.log().Warn("exempted device had become read-only; writable again", "device", d.Name, "exemption", id, "actions", describe(res.Actions))
		m.mu.Lock()
		unused := !t.used
		m.mu.Unlock()
		if unused {
			// A remount writes by itself (a superblock): not the user's.
			m.baseline(t, d)
		}
		m.changed()
	}
	return false
}

// endOrEnforce makes the device read-only: gently when an exemption of it
// was in force, as any device otherwise.
func (m *Manager) endOrEnforce(ctx context.Context, t *tracked, d Device, known bool) bool {
	m.mu.Lock()
	ending := t.exemption != ""
	m.mu.Unlock()
	if ending {
		return m.endExemption(ctx, t, d)
	}
	return m.enforce(ctx, t, d, known)
}

// exemptionFailed reports, once per exemption, that it could not be
// applied.
func (m *Manager) exemptionFailed(t *tracked, d Device, id, reason string) {
	m.mu.Lock()
	t.failedExemption = id
	m.mu.Unlock()
	a := exemptAttrs(d, id)
	a["reason"] = reason
	m.log().Error("exemption not applied: removable device stays read-only", "device", d.Name, "id", d.ID(), "exemption", id, "err", reason)
	m.emit(EventExemptionFailed, mnguardv1.Severity_SEVERITY_WARNING, fmt.Sprintf("exemption %s for %s (%s) not applied, the device stays read-only: %s", id, d.Name, d.ID(), reason), a)
}

// baseline records the device's write counter as of now.
func (m *Manager) baseline(t *tracked, d Device) {
	wc, ok := m.Platform.(WriteCounter)
	if !ok {
		return
	}
	n, err := wc.Writes(d)
	m.mu.Lock()
	t.writes, t.writesKnown = n, err == nil
	m.mu.Unlock()
	if err != nil {
		m.log().Debug("write counter unreadable: the first write to the exempted device will not be seen", "device", d.Name, "err", err)
	}
}

// checkUsed emits EventExemptionUsed when the device's write counter has
// moved since the exemption was applied, once.
func (m *Manager) checkUsed(t *tracked, d Device, id string) {
	wc, ok := m.Platform.(WriteCounter)
	m.mu.Lock()
	base, known, used := t.writes, t.writesKnown, t.used
	m.mu.Unlock()
	if !ok || !known || used {
		return
	}
	n, err := wc.Writes(d)
	if err != nil || n == base {
		return
	}
	if n < base {
		// The counter started again (a new device under the name).
		m.mu.Lock()
		t.writes = n
		m.mu.Unlock()
		return
	}
	m.mu.Lock()
	t.used = true
	t.detail += "; written to"
	m.mu.Unlock()
	a := exemptAttrs(d, id)
	a["writes"] = strconv.FormatUint(n-base, 10)
	m.log().Info("exempted device written to", "device", d.Name, "exemption", id, "writes", n-base)
	m.emit(EventExemptionUsed, mnguardv1.Severity_SEVERITY_INFO, fmt.Sprintf("%s (%s) written to under exemption %s", d.Name, d.ID(), id), a)
	m.changed()
}

// endExemption makes the device of an ended exemption read-only: gently
// (ProtectGently) while EndGrace lasts, warning the users once when files
// are still open for writing, then with Protect, which ends the writers
// or detaches the mount per on_busy. Until it is read-only the device is
// StateEnding, and past the grace the posture is unhealthy. It returns
// true when the device ends protected.
func (m *Manager) endExemption(ctx context.Context, t *tracked, d Device) bool {
	now := m.now()
	grace := m.endGrace()
	m.mu.Lock()
	id := t.exemption
	if t.state != StateEnding {
		t.endingSince, t.writers = now, ""
		t.warned, t.forced, t.alerted = false, false, false
	}
	deadline := t.endingSince.Add(grace)
	pastGrace := !now.Before(deadline)
	forceWarn := pastGrace && t.warned && !t.forced
	if forceWarn {
		t.forced = true
	}
	prevWriters := t.writers
	m.mu.Unlock()
	a := exemptAttrs(d, id)

	var res Result
	var err error
	ex, gentle := m.Platform.(Exempter)
	if pastGrace || !gentle {
		if forceWarn {
			m.log().Warn("exemption ended and its grace is over: ending the writers per on_busy", "device", d.Name, "exemption", id, "writers", prevWriters)
			m.warnUsers(ctx, forcedMessage(d))
		}
		res, err = m.Platform.Protect(ctx, d)
	} else {
		res, err = ex.ProtectGently(ctx, d)
	}
	if errors.Is(err, ErrVanished) {
		m.detach(d.Name)
		return false
	}
	detail := describe(res.Actions)
	switch {
	case err == nil && (res.State == StateReadOnly || res.State == StateDeauthorized):
		m.mu.Lock()
		t.state, t.detail, t.exemption = res.State, detail, ""
		t.endingSince, t.nextTry, t.writers = time.Time{}, time.Time{}, ""
		m.mu.Unlock()
		a["actions"] = detail
		a["forced"] = strconv.FormatBool(pastGrace)
		m.log().Info("exemption ended: removable device read-only again", "device", d.Name, "exemption", id, "actions", detail)
		m.emit(EventExemptionEnded, mnguardv1.Severity_SEVERITY_INFO, fmt.Sprintf("%s (%s) is %s again: exemption %s ended", d.Name, d.ID(), res.State, id), a)
		m.changed()
		return true

	case err == nil && res.State == StateEnding:
		writers := describeWriters(res.Busy)
		m.mu.Lock()
		t.state = StateEnding
		t.detail = fmt.Sprintf("exemption %s ended; still writable while %s; read-only by %s at the latest",
			id, writers, deadline.Format(time.RFC3339))
		t.nextTry = minTime(now.Add(m.endRetry()), deadline)
		first := !t.warned
		t.warned, t.writers = true, writers
		m.mu.Unlock()
		if first {
			a["writers"] = writers
			a["pids"] = writerPIDs(res.Busy)
			a["grace"] = grace.String()
			a["actions"] = detail
			m.log().Warn("exemption ended but files on the device are open for writing: users warned, writers have the grace period",
				"device", d.Name, "exemption", id, "writers", writers, "grace", grace)
			m.emit(EventExemptionEndBusy, mnguardv1.Severity_SEVERITY_WARNING,
				fmt.Sprintf("exemption %s ended, but %s (%s) is still being written to (%s): read-only within %s", id, d.Name, d.ID(), writers, grace), a)
			m.warnUsers(ctx, busyMessage(d, res.Busy, grace))
		}
		if first || writers != prevWriters {
			m.changed()
		}
		return false

	default:
		reason := detail
		if err != nil {
			reason = err.Error()
		}
		m.mu.Lock()
		t.state = StateEnding
		t.detail = fmt.Sprintf("exemption %s ended; NOT read-only: %s", id, reason)
		t.nextTry = now.Add(m.endRetry())
		if !pastGrace {
			t.nextTry = minTime(t.nextTry, deadline)
		}
		alert := pastGrace && !t.alerted
		if alert {
			t.alerted = true
		}
		m.mu.Unlock()
		if alert {
			a["reason"] = reason
			m.log().Error("exemption ended but the removable device could not be made read-only", "device", d.Name, "exemption", id, "err", reason)
			m.emit(EventEnforcementFailed, mnguardv1.Severity_SEVERITY_ALERT,
				fmt.Sprintf("exemption %s ended, but %s could not be made read-only: %s", id, d.Name, reason), a)
		} else {
			m.log().Warn("exemption ended; the removable device is not read-only yet", "device", d.Name, "exemption", id, "err", reason)
		}
		m.changed()
		return false
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func describeWriters(ws []Writer) string {
	parts := make([]string, 0, len(ws))
	for _, w := range ws {
		if w.PID == 0 {
			parts = append(parts, w.What+" on "+w.Mount)
			continue
		}
		parts = append(parts, w.String())
	}
	return strings.Join(parts, "; ")
}

func writerPIDs(ws []Writer) string {
	var pids []string
	for _, w := range ws {
		if w.PID != 0 {
			pids = append(pids, strconv.Itoa(w.PID))
		}
	}
	return strings.Join(pids, ",")
}

// deviceLabel names a device for its user: its model, else its kernel
// name, and its identity.
func deviceLabel(d Device) string {
	name := d.Model
	if name == "" {
		name = d.Name
	}
	return fmt.Sprintf("%s (%s)", name, d.ID())
}

// busyMessage is the warning for the terminal's users, in Japanese and in
// English.
func busyMessage(d Device, ws []Writer, grace time.Duration) string {
	var mounts, progs []string
	for _, w := range ws {
		if !slices.Contains(mounts, w.Mount) {
			mounts = append(mounts, w.Mount)
		}
		if w.PID != 0 {
			progs = append(progs, fmt.Sprintf("%s (pid %d)", w.Command, w.PID))
		}
	}
	prog := strings.Join(progs, ", ")
	if prog == "" {
		prog = "?"
	}
	return fmt.Sprintf("mnguard: リムーバブルディスク %[1]s への書き込み許可は終了しました。"+
		"%[2]s で開いているファイルを %[3]s 以内に保存して閉じてください。"+
		"その後、書き込み中のプログラム (%[4]s) は終了されるか、ディスクが切り離されます。\n"+
		"mnguard: write access to the removable disk %[1]s has ended. "+
		"Save and close the files open on %[2]s within %[3]s: "+
		"after that the programs still writing to it (%[4]s) will be ended or the disk detached.",
		deviceLabel(d), strings.Join(mounts, ", "), grace, prog)
}

// forcedMessage is the warning when the grace is over.
func forcedMessage(d Device) string {
	return fmt.Sprintf("mnguard: 猶予時間が過ぎました。リムーバブルディスク %[1]s に書き込み中のプログラムを終了し、読み取り専用にします。\n"+
		"mnguard: the grace period is over: the programs still writing to the removable disk %[1]s are being ended and the disk made read-only.",
		deviceLabel(d))
}

// warnUsers sends msg to the terminal's users in the background (Run
// waits for it at its end); a failure is logged.
func (m *Manager) warnUsers(ctx context.Context, msg string) {
	warn := m.Warn
	if warn == nil {
		warn = WarnUsers
	}
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), warnTimeout)
		defer cancel()
		if err := warn(ctx, msg); err != nil {
			m.log().Warn("could not warn the terminal's users", "err", err)
		}
	}()
}
