package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// auditRequest validates the flags of audit list.
func auditRequest(inv *invocation) (*mnguardv1.ListAuditRequest, error) {
	o := inv.opts
	req := &mnguardv1.ListAuditRequest{Action: o.action.v, Limit: defaultListLimit}
	if o.limit.set {
		n, err := parseCount(inv, "limit", o.limit.v, 1, maxAuditLimit)
		if err != nil {
			return nil, err
		}
		req.Limit = uint32(n)
	}
	if o.beforeID.set {
		n, err := parseCount(inv, "before-id", o.beforeID.v, 1, math.MaxInt64)
		if err != nil {
			return nil, err
		}
		req.BeforeId = int64(n)
	}
	if err := checkText(inv, "action", req.Action, maxAuditAction); err != nil {
		return nil, err
	}
	var err error
	if req.Since, req.Until, err = inv.timeRange(); err != nil {
		return nil, err
	}
	return req, nil
}

func auditList(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	req, err := auditRequest(inv)
	if err != nil {
		return err
	}
	limit := int(req.GetLimit())
	req.Limit = 0 // counted here over the pages
	es, _, err := collectPages(ctx, inv, "list audit log", mnguardv1.AdminServiceClient.ListAudit, req,
		func(token string, size uint32) { req.PageToken, req.PageSize = token, size },
		(*mnguardv1.ListAuditResponse).GetNextPageToken, (*mnguardv1.ListAuditResponse).GetEntries, limit)
	if err != nil {
		return err
	}
	resp := &mnguardv1.ListAuditResponse{Entries: es}
	if inv.format == formatJSON {
		return writeProtoJSON(w, resp)
	}
	type T = *mnguardv1.AuditEntry
	return writeList(w, inv.format, []column[T]{
		{"ID", "id", func(e T) string { return strconv.FormatInt(e.GetId(), 10) }, nil},
		{"TIME", "time", func(e T) string { return inv.timeText(e.GetTime()) }, nil},
		{"ACTOR", "actor", func(e T) string { return e.GetActor() }, nil},
		{"ACTION", "action", func(e T) string { return e.GetAction() }, nil},
		{"TARGET", "target", func(e T) string { return e.GetTarget() }, nil},
		{"DETAIL", "detail", func(e T) string { return e.GetDetail() }, nil},
		{"", "prev_hash", nil, func(e T) string { return hex.EncodeToString(e.GetPrevHash()) }},
		{"", "hash", nil, func(e T) string { return hex.EncodeToString(e.GetHash()) }},
	}, resp.GetEntries())
}

// auditVerify checks the audit chain. A broken chain is a failure, exit
// status 1, whatever the format; in JSON and CSV the verdict is printed
// all the same, for the scripts that keep it.
func auditVerify(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	resp, _, err := request(ctx, inv, "verify audit log", mnguardv1.AdminServiceClient.VerifyAudit, &mnguardv1.VerifyAuditRequest{})
	if err != nil {
		return err
	}
	var broken error
	if !resp.GetOk() {
		broken = fmt.Errorf("audit log broken at entry %d: %s (%s verified, head %d)", resp.GetBrokenAt(),
			sanitize(resp.GetReason()), plural(resp.GetEntries(), "entry", "entries"), resp.GetHeadId())
	}
	head := hex.EncodeToString(resp.GetHeadHash())
	switch inv.format {
	case formatJSON:
		if err := writeProtoJSON(w, resp); err != nil {
			return err
		}
	case formatCSV:
		if err := writeFields(w, inv.format, []field{
			kv("ok", "", strconv.FormatBool(resp.GetOk())),
			kv("entries", "", strconv.FormatUint(resp.GetEntries(), 10)),
			kv("head_id", "", strconv.FormatInt(resp.GetHeadId(), 10)),
			kv("head_hash", "", head),
			kv("broken_at", "", strconv.FormatInt(resp.GetBrokenAt(), 10)),
			kv("reason", "", resp.GetReason()),
		}); err != nil {
			return err
		}
	default:
		if broken != nil {
			return broken
		}
		headID := strconv.FormatInt(resp.GetHeadId(), 10)
		if resp.GetEntries() == 0 {
			headID = "none: the log is empty"
		}
		return writeFields(w, inv.format, []field{
			kv("", "Audit log", "intact: every entry follows from the one before"),
			kv("", "Entries", strconv.FormatUint(resp.GetEntries(), 10)),
			kv("", "Head ID", headID),
			kv("", "Head hash", head),
		})
	}
	if broken != nil {
		return verdictError{broken}
	}
	return nil
}
