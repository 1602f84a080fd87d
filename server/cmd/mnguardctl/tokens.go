package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// Limits of users import; the collector enforces the same (package api).
const (
	// maxImportBytes is the largest seed file: 100,000 tokens in an
	// encrypted PSKC file weigh about 150 MB.
	maxImportBytes = 256 << 20
	// maxImportTokens is the most tokens of one file.
	maxImportTokens = 100_000
	// importChunk is the size of the file's chunks on the stream.
	importChunk = 512 << 10
	// maxAssignFile bounds the --assign file: 100,000 lines of serial and
	// user name.
	maxAssignFile = 32 << 20
	// assignBatch is the number of assignments per stream message.
	assignBatch = 4096
	// importTimeout is the time limit of an import unless --timeout says
	// otherwise: 100,000 tokens take some seconds to store.
	importTimeout = 30 * time.Minute
)

// tooLargeMessage says that a seed file is over the limit, in the
// collector's words (api.TooLargeMessage).
func tooLargeMessage(size uint64) string {
	return fmt.Sprintf("the seed file is %s (%d bytes); the collector imports files of at most %s (%d bytes) and %d tokens at once: split it into several files",
		sizeText(size), size, sizeText(maxImportBytes), maxImportBytes, maxImportTokens)
}

func sizeText(n uint64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// importHeader checks the flags of users import and reads the PSKC key or
// password.
func importHeader(o *options) (*mnguardv1.ImportTokensHeader, error) {
	switch o.format.v {
	case "", "csv", "pskc":
	default:
		return nil, usagef("users import: invalid --format %q: want csv or pskc", o.format.v)
	}
	if o.pskFile.v != "" && o.passwordFile.v != "" {
		return nil, usagef("users import: give --psk-file or --password-file, not both")
	}
	h := &mnguardv1.ImportTokensHeader{Format: o.format.v, Replace: o.replace}
	if o.pskFile.v != "" {
		b, err := readLimited(o.pskFile.v, maxSecretFile, "pre-shared key file")
		if err != nil {
			return nil, err
		}
		key, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("pre-shared key file %s: not hex: %v", o.pskFile.v, err)
		}
		h.PskcKey = key
	}
	if o.passwordFile.v != "" {
		b, err := readLimited(o.passwordFile.v, maxSecretFile, "password file")
		if err != nil {
			return nil, err
		}
		h.PskcPassword = strings.TrimRight(string(b), "\r\n")
	}
	return h, nil
}

// parseAssignments reads an --assign file: CSV lines "serial,user", an
// optional header line "serial,user", blank lines ignored. Each serial
// once; at most maxImportTokens lines.
func parseAssignments(r io.Reader) ([]*mnguardv1.TokenAssignment, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = true
	seen := make(map[string]int)
	var out []*mnguardv1.TokenAssignment
	for n := 0; ; n++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err // a csv.ParseError names the line
		}
		line, _ := cr.FieldPos(0)
		if len(rec) != 2 {
			return nil, fmt.Errorf("line %d: %d fields, want 2 (serial,user)", line, len(rec))
		}
		serial, user := strings.TrimSpace(rec[0]), strings.TrimSpace(rec[1])
		if n == 0 && strings.EqualFold(serial, "serial") && strings.EqualFold(user, "user") {
			continue
		}
		switch {
		case serial == "" || user == "":
			return nil, fmt.Errorf("line %d: empty serial or user", line)
		case len(serial) > 128 || len(user) > 128:
			return nil, fmt.Errorf("line %d: serial or user longer than 128 bytes", line)
		case strings.ContainsFunc(serial+user, func(r rune) bool { return r < 0x20 || r == 0x7f }):
			return nil, fmt.Errorf("line %d: control character", line)
		}
		if first, dup := seen[serial]; dup {
			return nil, fmt.Errorf("line %d: serial %q assigned again (first on line %d)", line, sanitize(serial), first)
		}
		if len(out) == maxImportTokens {
			return nil, fmt.Errorf("line %d: more than %d assignments", line, maxImportTokens)
		}
		seen[serial] = line
		out = append(out, &mnguardv1.TokenAssignment{Serial: serial, User: user})
	}
	return out, nil
}

func usersImport(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	h, err := importHeader(inv.opts)
	if err != nil {
		return err
	}
	var assign []*mnguardv1.TokenAssignment
	if p := inv.opts.assign.v; p != "" {
		b, err := readLimited(p, maxAssignFile, "assignment file")
		if err != nil {
			return err
		}
		if assign, err = parseAssignments(bytes.NewReader(b)); err != nil {
			return fmt.Errorf("assignment file %s: %w", p, err)
		}
	}
	file := inv.args[0]
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("read seed file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("read seed file: %w", err)
	}
	switch size := uint64(max(fi.Size(), 0)); {
	case !fi.Mode().IsRegular():
		return fmt.Errorf("read seed file %s: not a regular file", file)
	case size == 0:
		return fmt.Errorf("read seed file %s: the file is empty", file)
	case size > maxImportBytes:
		return fmt.Errorf("import users: %s", tooLargeMessage(size))
	default:
		h.Size = size
	}

	c, err := inv.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	timeout := importTimeout
	if inv.opts.set["timeout"] || inv.getenv("MNGUARD_TIMEOUT") != "" {
		timeout = c.timeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fail := func(err error) error {
		return fmt.Errorf("import users: %s", c.withTimeout(timeout).explain(ctx, err))
	}
	stream, err := c.client.ImportTokens(ctx)
	if err != nil {
		return fail(err)
	}
	resp, err := sendImport(stream, h, assign, f)
	if err != nil {
		var rerr readError
		if errors.As(err, &rerr) {
			return fmt.Errorf("read seed file %s: %w", file, rerr.err)
		}
		return fail(err)
	}
	switch inv.format {
	case formatJSON:
		return writeProtoJSON(w, resp)
	case formatCSV:
		u := func(n uint32) string { return strconv.FormatUint(uint64(n), 10) }
		return writeFields(w, inv.format, []field{
			kv("tokens", "", u(resp.GetTokens())), kv("assigned", "", u(resp.GetAssigned())),
			kv("unassigned", "", u(resp.GetUnassigned())), kv("replaced", "", u(resp.GetReplaced())),
			kv("hotp", "", u(resp.GetHotp())),
		})
	}
	fmt.Fprintf(w, "imported %s from %s", plural(uint64(resp.GetTokens()), "token", "tokens"), sanitize(file))
	if n := resp.GetHotp(); n > 0 {
		fmt.Fprintf(w, " (%d HOTP)", n)
	}
	fmt.Fprintln(w)
	if n := resp.GetAssigned(); n > 0 {
		fmt.Fprintf(w, "  %s given to users, pending until each user's first code\n", plural(uint64(n), "token", "tokens"))
	}
	if n := resp.GetReplaced(); n > 0 {
		fmt.Fprintf(w, "  %s replaced\n", plural(uint64(n), "token", "tokens"))
	}
	if n := resp.GetUnassigned(); n > 0 {
		fmt.Fprintf(w, "  %s belong to no user and log nobody in: 'mnguardctl users tokens' lists them, 'mnguardctl users assign SERIAL NAME' gives one to a user\n", plural(uint64(n), "token", "tokens"))
	}
	return nil
}

// readError is a failure to read the local seed file while sending it.
type readError struct{ err error }

func (e readError) Error() string { return e.err.Error() }

// sendImport sends the header, the assignments and the file in chunks,
// and returns the collector's answer. When the collector ends the stream
// early (it refused the file), its status is the error.
func sendImport(stream grpc.ClientStreamingClient[mnguardv1.ImportTokensRequest, mnguardv1.ImportTokensResponse],
	h *mnguardv1.ImportTokensHeader, assign []*mnguardv1.TokenAssignment, file io.Reader) (*mnguardv1.ImportTokensResponse, error) {
	send := func(m *mnguardv1.ImportTokensRequest) (bool, error) {
		err := stream.Send(m)
		if errors.Is(err, io.EOF) {
			return false, nil // the server ended the stream: CloseAndRecv says why
		}
		return err == nil, err
	}
	ok, err := send(&mnguardv1.ImportTokensRequest{Part: &mnguardv1.ImportTokensRequest_Header{Header: h}})
	for i := 0; ok && i < len(assign); i += assignBatch {
		batch := assign[i:min(i+assignBatch, len(assign))]
		ok, err = send(&mnguardv1.ImportTokensRequest{Part: &mnguardv1.ImportTokensRequest_Assignments{
			Assignments: &mnguardv1.TokenAssignments{Assignments: batch}}})
	}
	var sent uint64
	buf := make([]byte, importChunk)
	for ok {
		n, rerr := io.ReadFull(file, buf)
		if n > 0 {
			sent += uint64(n)
			if sent > h.GetSize() {
				return nil, readError{fmt.Errorf("the file grew while it was sent (%d bytes, then more)", h.GetSize())}
			}
			ok, err = send(&mnguardv1.ImportTokensRequest{Part: &mnguardv1.ImportTokensRequest_Chunk{Chunk: buf[:n]}})
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return nil, readError{rerr}
		}
	}
	if err != nil {
		return nil, err
	}
	if ok && sent != h.GetSize() {
		return nil, readError{fmt.Errorf("the file shrank while it was sent (%d of %d bytes)", sent, h.GetSize())}
	}
	return stream.CloseAndRecv()
}

func usersAssign(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	serial, name := inv.args[0], inv.args[1]
	resp, _, err := request(ctx, inv, "assign token "+serial+" to "+name, mnguardv1.AdminServiceClient.AssignToken,
		&mnguardv1.AssignTokenRequest{Serial: serial, User: name, Replace: inv.opts.replace})
	if err != nil {
		return err
	}
	return inv.writeUser(w, resp, "gave token "+serial+" to "+name+"; pending until the user's first code")
}

func (inv *invocation) hardwareTokenColumns() []column[*mnguardv1.HardwareToken] {
	type T = *mnguardv1.HardwareToken
	u := func(n uint64) string { return strconv.FormatUint(n, 10) }
	return []column[T]{
		{"SERIAL", "serial", func(x T) string { return x.GetSerial() }, nil},
		{"KIND", "kind", func(x T) string { return strings.ToUpper(x.GetKind()) }, func(x T) string { return x.GetKind() }},
		{"TOKEN", "", func(x T) string {
			return paramsText(x.GetKind(), x.GetAlgorithm(), x.GetDigits(), x.GetPeriodSeconds(), x.GetCounter())
		}, nil},
		{"", "algorithm", nil, func(x T) string { return x.GetAlgorithm() }},
		{"", "digits", nil, func(x T) string { return u(uint64(x.GetDigits())) }},
		{"", "period_seconds", nil, func(x T) string { return u(uint64(x.GetPeriodSeconds())) }},
		{"", "counter", nil, func(x T) string { return u(x.GetCounter()) }},
		{"EXPIRES", "not_after", func(x T) string { return expiryText(inv, x.GetNotAfter() != nil, x.GetNotAfter()) }, func(x T) string { return inv.timeText(x.GetNotAfter()) }},
		{"IMPORTED", "created_at", func(x T) string { return inv.timeRel(x.GetCreatedAt()) }, func(x T) string { return inv.timeText(x.GetCreatedAt()) }},
		{"BY", "created_by", func(x T) string { return x.GetCreatedBy() }, nil},
	}
}

func usersTokens(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	req := &mnguardv1.ListTokensRequest{}
	toks, _, err := collectPages(ctx, inv, "list unassigned tokens", mnguardv1.AdminServiceClient.ListTokens, req,
		func(token string, size uint32) { req.PageToken, req.PageSize = token, size },
		(*mnguardv1.ListTokensResponse).GetNextPageToken, (*mnguardv1.ListTokensResponse).GetTokens, 0)
	if err != nil {
		return err
	}
	resp := &mnguardv1.ListTokensResponse{Tokens: toks}
	if inv.format == formatJSON {
		return writeProtoJSON(w, resp)
	}
	if inv.format == formatTable && len(resp.GetTokens()) == 0 {
		fmt.Fprintln(w, "no unassigned tokens")
		return nil
	}
	return writeList(w, inv.format, inv.hardwareTokenColumns(), resp.GetTokens())
}

// withTimeout is c with another time limit, for explain.
func (c *connection) withTimeout(d time.Duration) *connection {
	cc := *c
	cc.timeout = d
	return &cc
}

// paramsText is "TOTP SHA1, 6 digits, 30 s" or "HOTP SHA1, 6 digits,
// counter 12".
func paramsText(kind, alg string, digits, period uint32, counter uint64) string {
	if kind == "hotp" {
		return fmt.Sprintf("HOTP %s, %d digits, counter %d", alg, digits, counter)
	}
	return fmt.Sprintf("%s, %d digits, %d s", alg, digits, period)
}

// expiryText is when a token's key expires, "never" if set is false, and
// says "EXPIRED" once it has.
func expiryText(inv *invocation, set bool, ts *timestamppb.Timestamp) string {
	if !set {
		return "never"
	}
	s := inv.timeRel(ts)
	if !ts.AsTime().After(inv.now()) {
		s = "EXPIRED " + s
	}
	return s
}
