package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"

	qrcode "github.com/skip2/go-qrcode"
	"google.golang.org/protobuf/proto"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// Limits of the users commands (users import: tokens.go).
const (
	maxSecretFile = 4 << 10
	qrPNGSize     = 320
)

func userStateText(u *mnguardv1.User) string {
	s := "unknown"
	switch u.GetState() {
	case mnguardv1.UserState_USER_STATE_PENDING:
		s = "pending"
	case mnguardv1.UserState_USER_STATE_ACTIVE:
		s = "active"
	}
	if u.GetLocked() {
		s += ", LOCKED"
	}
	return s
}

// tokenText is "SHA1, 6 digits, 30 s" (or "HOTP SHA1, 6 digits, counter
// 12") and the serial of a hardware token.
func tokenText(u *mnguardv1.User) string {
	t := paramsText(u.GetKind(), u.GetAlgorithm(), u.GetDigits(), u.GetPeriodSeconds(), u.GetCounter())
	if s := u.GetTokenSerial(); s != "" {
		t += ", serial " + s
	}
	return t
}

func (inv *invocation) userColumns() []column[*mnguardv1.User] {
	type T = *mnguardv1.User
	u := func(n uint32) string { return strconv.FormatUint(uint64(n), 10) }
	return []column[T]{
		{"NAME", "name", func(x T) string { return x.GetName() }, nil},
		{"STATE", "", func(x T) string { return userStateText(x) }, nil},
		{"", "state", nil, func(x T) string { return strings.TrimPrefix(strings.ToLower(x.GetState().String()), "user_state_") }},
		{"", "locked", nil, func(x T) string { return strconv.FormatBool(x.GetLocked()) }},
		{"SOURCE", "source", func(x T) string { return x.GetSource() }, nil},
		{"TOKEN", "", func(x T) string { return tokenText(x) }, nil},
		{"", "algorithm", nil, func(x T) string { return x.GetAlgorithm() }},
		{"", "digits", nil, func(x T) string { return u(x.GetDigits()) }},
		{"", "period_seconds", nil, func(x T) string { return u(x.GetPeriodSeconds()) }},
		{"", "token_serial", nil, func(x T) string { return x.GetTokenSerial() }},
		{"FAILURES", "failures", func(x T) string { return u(x.GetFailures()) }, nil},
		{"LAST LOGIN", "last_login_at", func(x T) string { return inv.lastLogin(x) }, func(x T) string { return inv.timeText(x.GetLastLoginAt()) }},
		{"RECOVERY", "recovery_codes_left", func(x T) string { return u(x.GetRecoveryCodesLeft()) + " left" }, func(x T) string { return u(x.GetRecoveryCodesLeft()) }},
		{"", "created_at", nil, func(x T) string { return inv.timeText(x.GetCreatedAt()) }},
	}
}

func (inv *invocation) lastLogin(u *mnguardv1.User) string {
	if u.GetLastLoginAt() == nil {
		return "never"
	}
	return inv.timeRel(u.GetLastLoginAt())
}

func (inv *invocation) userFields(u *mnguardv1.User) []field {
	offset := u.GetClockOffsetSteps()
	lastLogin := inv.timeField("last_login_at", "Last login", u.GetLastLoginAt())
	if u.GetLastLoginAt() == nil {
		lastLogin.value = "never"
	}
	return []field{
		kv("name", "Name", u.GetName()),
		{key: "state", label: "State", value: userStateText(u), raw: strings.TrimPrefix(strings.ToLower(u.GetState().String()), "user_state_")},
		kv("locked", "", strconv.FormatBool(u.GetLocked())),
		inv.timeField("locked_at", "Locked", u.GetLockedAt()),
		kv("failures", "Consecutive failures", strconv.FormatUint(uint64(u.GetFailures()), 10)),
		kv("source", "Source", u.GetSource()),
		{key: "algorithm", label: "Token", value: tokenText(u), raw: u.GetAlgorithm()},
		kv("digits", "", strconv.FormatUint(uint64(u.GetDigits()), 10)),
		kv("period_seconds", "", strconv.FormatUint(uint64(u.GetPeriodSeconds()), 10)),
		kv("token_serial", "", u.GetTokenSerial()),
		kv("kind", "", u.GetKind()),
		kv("counter", "", strconv.FormatUint(u.GetCounter(), 10)),
		{key: "not_after", label: "Token expires", value: expiryText(inv, u.GetNotAfter() != nil, u.GetNotAfter()), raw: inv.timeText(u.GetNotAfter())},
		{key: "clock_offset_steps", label: "Clock offset", value: plural(uint64(max(offset, -offset)), "step", "steps") + signWord(offset), raw: strconv.FormatInt(offset, 10)},
		kv("recovery_codes_left", "Recovery codes left", strconv.FormatUint(uint64(u.GetRecoveryCodesLeft()), 10)),
		inv.timeField("created_at", "Created", u.GetCreatedAt()),
		kv("created_by", "Created by", u.GetCreatedBy()),
		inv.timeField("confirmed_at", "Confirmed", u.GetConfirmedAt()),
		lastLogin,
	}
}

func signWord(n int64) string {
	switch {
	case n > 0:
		return " ahead"
	case n < 0:
		return " behind"
	}
	return ""
}

// writeUser prints one user in the invocation's format; msg is the table
// format's headline.
func (inv *invocation) writeUser(w *bytes.Buffer, resp userResponse, msg string) error {
	switch inv.format {
	case formatJSON:
		return writeProtoJSON(w, resp)
	case formatCSV:
		return writeList(w, inv.format, inv.userColumns(), []*mnguardv1.User{resp.GetUser()})
	}
	if msg != "" {
		fmt.Fprintln(w, sanitize(msg))
	}
	return writeFields(w, inv.format, inv.userFields(resp.GetUser()))
}

func usersList(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	req := &mnguardv1.ListUsersRequest{}
	us, _, err := collectPages(ctx, inv, "list users", mnguardv1.AdminServiceClient.ListUsers, req,
		func(token string, size uint32) { req.PageToken, req.PageSize = token, size },
		(*mnguardv1.ListUsersResponse).GetNextPageToken, (*mnguardv1.ListUsersResponse).GetUsers, 0)
	if err != nil {
		return err
	}
	resp := &mnguardv1.ListUsersResponse{Users: us}
	if inv.format == formatJSON {
		return writeProtoJSON(w, resp)
	}
	return writeList(w, inv.format, inv.userColumns(), resp.GetUsers())
}

func usersShow(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	name := inv.args[0]
	resp, _, err := request(ctx, inv, "show user "+name, mnguardv1.AdminServiceClient.GetUser, &mnguardv1.GetUserRequest{Name: name})
	if err != nil {
		return err
	}
	return inv.writeUser(w, resp, "")
}

func usersConfirm(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	name, code := inv.args[0], inv.args[1]
	resp, _, err := request(ctx, inv, "confirm user "+name, mnguardv1.AdminServiceClient.ConfirmUser, &mnguardv1.ConfirmUserRequest{Name: name, Code: code})
	if err != nil {
		return err
	}
	return inv.writeUser(w, resp, "confirmed "+name+": logins now need a code from this token")
}

func usersUnlock(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	name := inv.args[0]
	resp, _, err := request(ctx, inv, "unlock user "+name, mnguardv1.AdminServiceClient.UnlockUser, &mnguardv1.UnlockUserRequest{Name: name})
	if err != nil {
		return err
	}
	return inv.writeUser(w, resp, "unlocked "+name)
}

func usersResync(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	name := inv.args[0]
	resp, _, err := request(ctx, inv, "resync user "+name, mnguardv1.AdminServiceClient.ResyncUser,
		&mnguardv1.ResyncUserRequest{Name: name, Code1: inv.args[1], Code2: inv.args[2]})
	if err != nil {
		return err
	}
	return inv.writeUser(w, resp, "resynchronised "+name)
}

func usersDelete(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	name := inv.args[0]
	resp, _, err := request(ctx, inv, "delete user "+name, mnguardv1.AdminServiceClient.DeleteUser, &mnguardv1.DeleteUserRequest{Name: name})
	if err != nil {
		return err
	}
	switch inv.format {
	case formatJSON:
		return writeProtoJSON(w, resp)
	case formatCSV:
		return writeFields(w, inv.format, []field{kv("deleted", "", name)})
	}
	fmt.Fprintf(w, "deleted user %s: logins through pam_mnguard are refused for this user until enrolled again\n", sanitize(name))
	return nil
}

// userResponse is a response carrying one user.
type userResponse interface {
	proto.Message
	GetUser() *mnguardv1.User
}

// secretResponse is what enroll and reset return.
type secretResponse interface {
	userResponse
	GetOtpauthUrl() string
	GetSecret() string
	GetRecoveryCodes() []string
}

// checkQRPath fails early when --qr names a file that exists, so that an
// enrollment is not made only to fail at writing it.
func checkQRPath(path string) error {
	return checkNewFile("qr", path, "the QR code holds the secret and is never overwritten")
}

// checkNewFile fails when the file that flag names exists already: files
// written by mnguardctl are new, never overwritten. why says so.
func checkNewFile(flag, path, why string) error {
	if path == "" {
		return nil
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("--%s %s: file exists; %s", flag, path, why)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("--%s %s: %w", flag, path, err)
	}
	return nil
}

func usersEnroll(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	name := inv.args[0]
	if err := checkQRPath(inv.opts.qr.v); err != nil {
		return err
	}
	resp, _, err := request(ctx, inv, "enroll user "+name, mnguardv1.AdminServiceClient.EnrollUser, &mnguardv1.EnrollUserRequest{Name: name})
	if err != nil {
		return err
	}
	return inv.writeSecret(w, resp, "enrolled "+name)
}

func usersReset(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	name := inv.args[0]
	if err := checkQRPath(inv.opts.qr.v); err != nil {
		return err
	}
	resp, _, err := request(ctx, inv, "reset user "+name, mnguardv1.AdminServiceClient.ResetUser, &mnguardv1.ResetUserRequest{Name: name})
	if err != nil {
		return err
	}
	return inv.writeSecret(w, resp, "reset "+name+": the old token and recovery codes no longer work")
}

// writeSecret prints a new secret: URL, QR code, recovery codes. The secret
// is shown this once; the server never returns it again.
func (inv *invocation) writeSecret(w *bytes.Buffer, r secretResponse, headline string) error {
	u := r.GetUser()
	if err := inv.writeQR(r.GetOtpauthUrl(), headline, "users reset "+u.GetName()); err != nil {
		return err
	}
	switch inv.format {
	case formatJSON:
		return writeProtoJSON(w, r)
	case formatCSV:
		fields := []field{
			kv("name", "", u.GetName()),
			kv("otpauth_url", "", r.GetOtpauthUrl()),
			kv("secret", "", r.GetSecret()),
		}
		for i, c := range r.GetRecoveryCodes() {
			fields = append(fields, kv(fmt.Sprintf("recovery_code_%d", i+1), "", c))
		}
		return writeFields(w, inv.format, fields)
	}
	if err := inv.writeTOTPTable(w, headline+"; pending until the user's first code confirms it",
		r.GetOtpauthUrl(), r.GetSecret()+" ("+tokenText(u)+")"); err != nil {
		return err
	}
	if codes := r.GetRecoveryCodes(); len(codes) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Recovery codes, each works once at the login prompt (give them to the user; not shown again):")
		for _, c := range codes {
			fmt.Fprintln(w, "  "+sanitize(c))
		}
	}
	return nil
}

// writeQR writes the QR code of a new secret to the --qr file, if any. The
// secret exists already, so a failure says how to get a new one: redo, a
// command.
func (inv *invocation) writeQR(url, headline, redo string) error {
	path := inv.opts.qr.v
	if path == "" {
		return nil
	}
	if err := writeQRFile(path, url); err != nil {
		return fmt.Errorf("%s, but the QR code could not be written (%v): run 'mnguardctl %s' for a new secret", headline, err, redo)
	}
	return nil
}

// writeTOTPTable prints a new TOTP secret for people: the headline, the QR
// code for the terminal, the otpauth:// URL, the secret (with what else
// secretText says) and where the --qr file went.
func (inv *invocation) writeTOTPTable(w *bytes.Buffer, headline, url, secretText string) error {
	q, err := qrcode.New(url, qrcode.Medium)
	if err != nil {
		return fmt.Errorf("%s, but the QR code could not be made (%v): use the URL or the secret", headline, err)
	}
	fmt.Fprintln(w, sanitize(headline))
	fmt.Fprintln(w, "Scan with the authenticator app (or enter the secret by hand):")
	fmt.Fprintln(w)
	w.WriteString(q.ToSmallString(false))
	fmt.Fprintln(w)
	fmt.Fprintln(w, sanitize(url))
	fmt.Fprintf(w, "Secret: %s\n", sanitize(secretText))
	if path := inv.opts.qr.v; path != "" {
		fmt.Fprintf(w, "QR code written to %s (it holds the secret: delete it once scanned)\n", sanitize(path))
	}
	return nil
}

func writeQRFile(path, url string) error {
	png, err := qrcode.Encode(url, qrcode.Medium, qrPNGSize)
	if err != nil {
		return err
	}
	return writeNewFile(path, png)
}

// writeNewFile writes data to a new file of mode 0600; it never replaces
// an existing file, and removes what it wrote when writing fails.
func writeNewFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

func usersRecoveryCodes(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	name := inv.args[0]
	resp, _, err := request(ctx, inv, "new recovery codes for "+name, mnguardv1.AdminServiceClient.NewRecoveryCodes, &mnguardv1.NewRecoveryCodesRequest{Name: name})
	if err != nil {
		return err
	}
	switch inv.format {
	case formatJSON:
		return writeProtoJSON(w, resp)
	case formatCSV:
		var fields []field
		for i, c := range resp.GetRecoveryCodes() {
			fields = append(fields, kv(fmt.Sprintf("recovery_code_%d", i+1), "", c))
		}
		return writeFields(w, inv.format, fields)
	}
	fmt.Fprintf(w, "new recovery codes for %s (the old ones no longer work; not shown again):\n", sanitize(name))
	for _, c := range resp.GetRecoveryCodes() {
		fmt.Fprintln(w, "  "+sanitize(c))
	}
	return nil
}

// readLimited reads a whole file of at most limit bytes.
func readLimited(path string, limit int64, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", what, path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("read %s %s: larger than %d bytes", what, path, limit)
	}
	return b, nil
}

func usersOfflineCode(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	o := inv.opts
	for _, f := range []struct {
		name string
		v    string
	}{{"terminal", o.terminal.v}, {"user", o.user.v}, {"challenge", o.challenge.v}} {
		if f.v == "" {
			return usagef("users offline-code: --%s is required (usage: mnguardctl %s)", f.name, inv.cmd.usage())
		}
	}
	resp, _, err := request(ctx, inv, "issue offline login code", mnguardv1.AdminServiceClient.IssueOfflineLoginCode,
		&mnguardv1.IssueOfflineLoginCodeRequest{TerminalId: o.terminal.v, User: o.user.v, Challenge: o.challenge.v})
	if err != nil {
		return err
	}
	switch inv.format {
	case formatJSON:
		return writeProtoJSON(w, resp)
	case formatCSV:
		return writeFields(w, inv.format, []field{
			kv("code", "", resp.GetCode()),
			kv("valid_until", "", inv.timeText(resp.GetValidUntil())),
		})
	}
	// The bare code first, alone on its line, to read out over the phone.
	fmt.Fprintln(w, sanitize(resp.GetCode()))
	fmt.Fprintf(w, "one-time offline login code for %s on terminal %s, valid until %s\n",
		sanitize(o.user.v), sanitize(o.terminal.v), inv.timeRel(resp.GetValidUntil()))
	return nil
}
