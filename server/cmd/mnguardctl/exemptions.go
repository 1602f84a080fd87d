package main

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/mnguard/mnguard/internal/exemption"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// maxExemptionDuration is the longest duration any collector accepts; the
// collector's own policy is usually lower and is checked there.
const maxExemptionDuration = exemption.MaxDuration

// requireFlags fails with a usage error naming the first missing flag.
func requireFlags(inv *invocation, flags ...struct{ name, v string }) error {
	for _, f := range flags {
		if f.v == "" {
			return usagef("%s: --%s is required (usage: mnguardctl %s)", inv.cmd.name, f.name, inv.cmd.usage())
		}
	}
	return nil
}

type flagValue = struct{ name, v string }

// parseDuration validates --duration; zero means the collector's default.
func parseDuration(inv *invocation) (uint32, error) {
	if !inv.opts.duration.set {
		return 0, nil
	}
	d, err := time.ParseDuration(inv.opts.duration.v)
	switch {
	case err != nil:
		return 0, usagef("%s: invalid --duration %q: want a duration such as 1h or 30m", inv.cmd.name, inv.opts.duration.v)
	case d < time.Minute:
		return 0, usagef("%s: invalid --duration %q: at least 1m", inv.cmd.name, inv.opts.duration.v)
	case d > maxExemptionDuration:
		return 0, usagef("%s: invalid --duration %q: at most %s", inv.cmd.name, inv.opts.duration.v, maxExemptionDuration)
	case d%time.Second != 0:
		return 0, usagef("%s: invalid --duration %q: whole seconds only", inv.cmd.name, inv.opts.duration.v)
	}
	return uint32(d / time.Second), nil
}

func exemptionsIssue(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	o := inv.opts
	if err := requireFlags(inv, flagValue{"terminal", o.terminal.v}, flagValue{"device", o.device.v},
		flagValue{"reason", o.reason.v}, flagValue{"ticket", o.ticket.v}); err != nil {
		return err
	}
	dev, err := exemption.ParseDevice(o.device.v)
	if err != nil {
		return usagef("exemptions issue: --device: %v", err)
	}
	if dev.GetSerial() == "" && !o.allowNoSerial {
		return usagef("exemptions issue: device %s has no serial number and cannot be told apart from its twins: add --allow-no-serial to exempt every one of them (recorded)", exemption.FormatDevice(dev))
	}
	secs, err := parseDuration(inv)
	if err != nil {
		return err
	}
	resp, _, err := request(ctx, inv, "issue exemption", mnguardv1.AdminServiceClient.IssueExemption, &mnguardv1.IssueExemptionRequest{
		TerminalId: o.terminal.v, Device: dev, DurationSeconds: secs, Reason: o.reason.v, Ticket: o.ticket.v, AllowNoSerial: o.allowNoSerial,
	})
	if err != nil {
		return err
	}
	switch inv.format {
	case formatJSON:
		return writeProtoJSON(w, resp)
	case formatCSV:
		return writeList(w, inv.format, inv.exemptionColumns(), []*mnguardv1.ExemptionRecord{resp.GetExemption()})
	}
	e := resp.GetExemption().GetExemption()
	// The ID first, alone on its line, to revoke with.
	fmt.Fprintln(w, sanitize(e.GetId()))
	delivered := "the terminal is not connected: it gets it when it reconnects"
	if resp.GetDelivered() {
		delivered = "pushed to the terminal"
	}
	fmt.Fprintf(w, "%s writable on %s until %s; %s\n", sanitize(exemption.FormatDevice(e.GetDevice())), sanitize(e.GetTerminalId()),
		inv.timeRel(e.GetNotAfter()), delivered)
	return nil
}

func exemptionsRevoke(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	id := inv.args[0]
	resp, _, err := request(ctx, inv, "revoke exemption "+id, mnguardv1.AdminServiceClient.RevokeExemption,
		&mnguardv1.RevokeExemptionRequest{Id: id, Reason: inv.opts.reason.v})
	if err != nil {
		return err
	}
	switch inv.format {
	case formatJSON:
		return writeProtoJSON(w, resp)
	case formatCSV:
		return writeList(w, inv.format, inv.exemptionColumns(), []*mnguardv1.ExemptionRecord{resp.GetExemption()})
	}
	e := resp.GetExemption().GetExemption()
	fmt.Fprintf(w, "revoked exemption %s: %s on %s is read-only again once the terminal hears of it\n",
		sanitize(id), sanitize(exemption.FormatDevice(e.GetDevice())), sanitize(e.GetTerminalId()))
	return nil
}

func exemptionsList(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	req := &mnguardv1.ListExemptionsRequest{TerminalId: inv.opts.terminal.v, ActiveOnly: inv.opts.active}
	es, _, err := collectPages(ctx, inv, "list exemptions", mnguardv1.AdminServiceClient.ListExemptions, req,
		func(token string, size uint32) { req.PageToken, req.PageSize = token, size },
		(*mnguardv1.ListExemptionsResponse).GetNextPageToken, (*mnguardv1.ListExemptionsResponse).GetExemptions, 0)
	if err != nil {
		return err
	}
	resp := &mnguardv1.ListExemptionsResponse{Exemptions: es}
	if inv.format == formatJSON {
		return writeProtoJSON(w, resp)
	}
	return writeList(w, inv.format, inv.exemptionColumns(), resp.GetExemptions())
}

func (inv *invocation) exemptionColumns() []column[*mnguardv1.ExemptionRecord] {
	type T = *mnguardv1.ExemptionRecord
	e := func(r T) *mnguardv1.Exemption { return r.GetExemption() }
	return []column[T]{
		{"ID", "id", func(r T) string { return e(r).GetId() }, nil},
		{"TERMINAL", "terminal_id", func(r T) string { return e(r).GetTerminalId() }, nil},
		{"DEVICE", "device", func(r T) string { return exemption.FormatDevice(e(r).GetDevice()) }, nil},
		{"STATE", "state", func(r T) string { return r.GetState() }, nil},
		{"SOURCE", "source", func(r T) string { return r.GetSource() }, nil},
		{"", "not_before", nil, func(r T) string { return inv.timeText(e(r).GetNotBefore()) }},
		{"UNTIL", "not_after", func(r T) string { return inv.timeRel(e(r).GetNotAfter()) }, func(r T) string { return inv.timeText(e(r).GetNotAfter()) }},
		{"", "duration_seconds", nil, func(r T) string { return strconv.FormatUint(uint64(e(r).GetDurationSeconds()), 10) }},
		{"ISSUER", "issuer", func(r T) string { return e(r).GetIssuer() }, nil},
		{"TICKET", "ticket", func(r T) string { return e(r).GetTicket() }, nil},
		{"REASON", "reason", func(r T) string { return e(r).GetReason() }, nil},
		{"", "allow_no_serial", nil, func(r T) string { return strconv.FormatBool(e(r).GetAllowNoSerial()) }},
		{"", "revoked_at", nil, func(r T) string { return inv.timeText(r.GetRevokedAt()) }},
		{"", "revoked_by", nil, func(r T) string { return r.GetRevokedBy() }},
		{"", "delivered_at", nil, func(r T) string { return inv.timeText(r.GetDeliveredAt()) }},
	}
}

func exemptionsOfflineCode(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	o := inv.opts
	if err := requireFlags(inv, flagValue{"terminal", o.terminal.v}, flagValue{"challenge", o.challenge.v},
		flagValue{"reason", o.reason.v}, flagValue{"ticket", o.ticket.v}); err != nil {
		return err
	}
	if _, err := exemption.ParseChallenge(o.challenge.v); err != nil {
		return usagef("exemptions offline-code: --challenge: %v", err)
	}
	req := &mnguardv1.IssueOfflineExemptionCodeRequest{TerminalId: o.terminal.v, Challenge: o.challenge.v,
		Reason: o.reason.v, Ticket: o.ticket.v, AllowNoSerial: o.allowNoSerial}
	if o.device.v != "" {
		dev, err := exemption.ParseDevice(o.device.v)
		if err != nil {
			return usagef("exemptions offline-code: --device: %v", err)
		}
		req.Device = dev
	}
	resp, _, err := request(ctx, inv, "issue offline exemption code", mnguardv1.AdminServiceClient.IssueOfflineExemptionCode, req)
	if err != nil {
		return err
	}
	switch inv.format {
	case formatJSON:
		return writeProtoJSON(w, resp)
	case formatCSV:
		e := resp.GetExemption().GetExemption()
		return writeFields(w, inv.format, []field{
			kv("code", "", resp.GetCode()),
			kv("id", "", e.GetId()),
			kv("device", "", exemption.FormatDevice(e.GetDevice())),
			kv("duration_seconds", "", strconv.FormatUint(uint64(e.GetDurationSeconds()), 10)),
		})
	}
	e := resp.GetExemption().GetExemption()
	// The bare code first, alone on its line, to read out over the phone.
	fmt.Fprintln(w, sanitize(resp.GetCode()))
	fmt.Fprintf(w, "one-time response for %s on terminal %s, %s of write access once entered (exemption %s)\n",
		sanitize(exemption.FormatDevice(e.GetDevice())), sanitize(e.GetTerminalId()),
		longDuration(time.Duration(e.GetDurationSeconds())*time.Second), sanitize(e.GetId()))
	return nil
}
