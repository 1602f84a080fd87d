package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// operatorRoles are the roles an operator may have.
var operatorRoles = []string{"admin", "helpdesk", "auditor"}

// checkRole validates --role, which the command requires.
func checkRole(inv *invocation) error {
	role := inv.opts.role.v
	if err := requireFlags(inv, flagValue{"role", role}); err != nil {
		return err
	}
	if !slices.Contains(operatorRoles, role) {
		return usagef("%s: invalid --role %q: want %s", inv.cmd.name, role, orList(operatorRoles))
	}
	return nil
}

// readPasswordFile reads the password of --password-file, which the
// command requires: the file's first line, without its line break. The
// error never includes the password.
func readPasswordFile(inv *invocation) (string, error) {
	path := inv.opts.passwordFile.v
	if err := requireFlags(inv, flagValue{"password-file", path}); err != nil {
		return "", err
	}
	b, err := readLimited(path, maxSecretFile, "password file")
	if err != nil {
		return "", err
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	pw = strings.TrimSuffix(pw, "\r")
	if pw == "" {
		return "", fmt.Errorf("password file %s: empty (the password is its first line)", path)
	}
	return pw, nil
}

func operatorStateText(o *mnguardv1.Operator) string {
	s := "active"
	if o.GetDisabled() {
		s = "disabled"
	}
	if o.GetLocked() {
		s += ", LOCKED"
	}
	return s
}

func passwordText(o *mnguardv1.Operator) string {
	if o.GetHasPassword() {
		return "set"
	}
	return "none"
}

func (inv *invocation) lastSignIn(o *mnguardv1.Operator) string {
	if o.GetLastSignInAt() == nil {
		return "never"
	}
	return inv.timeRel(o.GetLastSignInAt())
}

func (inv *invocation) operatorColumns() []column[*mnguardv1.Operator] {
	type T = *mnguardv1.Operator
	return []column[T]{
		{"NAME", "name", func(o T) string { return o.GetName() }, nil},
		{"ROLE", "role", func(o T) string { return o.GetRole() }, nil},
		{"STATE", "", func(o T) string { return operatorStateText(o) }, nil},
		{"", "disabled", nil, func(o T) string { return strconv.FormatBool(o.GetDisabled()) }},
		{"", "disabled_at", nil, func(o T) string { return inv.timeText(o.GetDisabledAt()) }},
		{"", "locked", nil, func(o T) string { return strconv.FormatBool(o.GetLocked()) }},
		{"", "locked_at", nil, func(o T) string { return inv.timeText(o.GetLockedAt()) }},
		{"FAILURES", "failures", func(o T) string { return strconv.FormatUint(uint64(o.GetFailures()), 10) }, nil},
		{"PASSWORD", "has_password", func(o T) string { return passwordText(o) }, func(o T) string { return strconv.FormatBool(o.GetHasPassword()) }},
		{"LAST SIGN-IN", "last_sign_in_at", func(o T) string { return inv.lastSignIn(o) }, func(o T) string { return inv.timeText(o.GetLastSignInAt()) }},
		{"CREATED", "created_at", func(o T) string { return inv.timeText(o.GetCreatedAt()) }, nil},
		{"CREATED BY", "created_by", func(o T) string { return o.GetCreatedBy() }, nil},
		{"", "language", nil, func(o T) string { return o.GetLanguage() }},
	}
}

// operatorFields is an operator for operators show, with its API tokens
// when tokens is set.
func (inv *invocation) operatorFields(o *mnguardv1.Operator, tokens bool) []field {
	lastSignIn := inv.timeField("last_sign_in_at", "Last sign-in", o.GetLastSignInAt())
	lastSignIn.value = inv.lastSignIn(o)
	lang := field{key: "language", label: "Language", value: o.GetLanguage(), raw: o.GetLanguage()}
	if lang.value == "" {
		lang.value = "from the browser, else ja"
	}
	pw := field{key: "has_password", label: "Password", value: passwordText(o), raw: strconv.FormatBool(o.GetHasPassword())}
	if !o.GetHasPassword() {
		pw.value = "none: cannot sign in to the console (API tokens work)"
	}
	fs := []field{
		kv("name", "Name", o.GetName()),
		kv("role", "Role", o.GetRole()),
		{key: "disabled", label: "State", value: operatorStateText(o), raw: strconv.FormatBool(o.GetDisabled())},
		inv.timeField("disabled_at", "Disabled", o.GetDisabledAt()),
		kv("locked", "", strconv.FormatBool(o.GetLocked())),
		inv.timeField("locked_at", "Locked", o.GetLockedAt()),
		kv("failures", "Consecutive failures", strconv.FormatUint(uint64(o.GetFailures()), 10)),
		pw,
		lang,
		inv.timeField("created_at", "Created", o.GetCreatedAt()),
		kv("created_by", "Created by", o.GetCreatedBy()),
		lastSignIn,
	}
	if !tokens {
		return fs
	}
	toks := field{label: "API tokens"}
	if len(o.GetTokens()) == 0 {
		toks.value = "none"
	}
	for i, t := range o.GetTokens() {
		prefix := fmt.Sprintf("tokens.%d.", i)
		expires := inv.timeField(prefix+"expires_at", "Expires", t.GetExpiresAt())
		if t.GetExpiresAt() == nil {
			expires.value = "never"
		}
		toks.sub = append(toks.sub, field{label: t.GetId(), value: inv.operatorTokenStatus(t), sub: []field{
			kv(prefix+"id", "", t.GetId()),
			kv(prefix+"status", "", inv.operatorTokenStatus(t)),
			kv(prefix+"note", "Note", t.GetNote()),
			inv.timeField(prefix+"created_at", "Created", t.GetCreatedAt()),
			expires,
			inv.timeField(prefix+"revoked_at", "Revoked", t.GetRevokedAt()),
		}})
	}
	return append(fs, toks)
}

// operatorTokenStatus is "active", "expired" or "revoked".
func (inv *invocation) operatorTokenStatus(t *mnguardv1.OperatorToken) string {
	switch {
	case t.GetRevokedAt() != nil:
		return "revoked"
	case t.GetExpiresAt() != nil && !inv.now().Before(t.GetExpiresAt().AsTime()):
		return "expired"
	}
	return "active"
}

// operatorResponse is a response carrying one operator.
type operatorResponse interface {
	proto.Message
	GetOperator() *mnguardv1.Operator
}

// writeOperator prints the operator a change returned; msg is the table
// format's headline.
func (inv *invocation) writeOperator(w *bytes.Buffer, resp operatorResponse, msg string) error {
	switch inv.format {
	case formatJSON:
		return writeProtoJSON(w, resp)
	case formatCSV:
		return writeList(w, inv.format, inv.operatorColumns(), []*mnguardv1.Operator{resp.GetOperator()})
	}
	fmt.Fprintln(w, sanitize(msg))
	return writeFields(w, inv.format, inv.operatorFields(resp.GetOperator(), false))
}

func operatorsList(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	req := &mnguardv1.ListOperatorsRequest{}
	os, _, err := collectPages(ctx, inv, "list operators", mnguardv1.AdminServiceClient.ListOperators, req,
		func(token string, size uint32) { req.PageToken, req.PageSize = token, size },
		(*mnguardv1.ListOperatorsResponse).GetNextPageToken, (*mnguardv1.ListOperatorsResponse).GetOperators, 0)
	if err != nil {
		return err
	}
	resp := &mnguardv1.ListOperatorsResponse{Operators: os}
	if inv.format == formatJSON {
		return writeProtoJSON(w, resp)
	}
	return writeList(w, inv.format, inv.operatorColumns(), resp.GetOperators())
}

func operatorsShow(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	name := inv.args[0]
	resp, _, err := request(ctx, inv, "show operator "+name, mnguardv1.AdminServiceClient.GetOperator, &mnguardv1.GetOperatorRequest{Name: name})
	if err != nil {
		return err
	}
	if inv.format == formatJSON {
		return writeProtoJSON(w, resp)
	}
	return writeFields(w, inv.format, inv.operatorFields(resp.GetOperator(), true))
}

// newTOTP is a new console TOTP secret of an operator, as -o json prints it.
type newTOTP struct {
	Name       string `json:"name"`
	Role       string `json:"role"`
	OtpauthURL string `json:"otpauth_url"`
	Secret     string `json:"secret"`
}

// writeOperatorSecret prints an operator's new TOTP secret, once: the
// server never returns it again.
func (inv *invocation) writeOperatorSecret(w *bytes.Buffer, o *mnguardv1.Operator, url, secret, headline string) error {
	if err := inv.writeQR(url, headline, "operators reset-totp "+o.GetName()); err != nil {
		return err
	}
	switch inv.format {
	case formatJSON:
		return writeJSON(w, newTOTP{Name: o.GetName(), Role: o.GetRole(), OtpauthURL: url, Secret: secret})
	case formatCSV:
		return writeFields(w, inv.format, []field{
			kv("name", "", o.GetName()),
			kv("role", "", o.GetRole()),
			kv("otpauth_url", "", url),
			kv("secret", "", secret),
		})
	}
	return inv.writeTOTPTable(w, headline, url, secret)
}

func operatorsAdd(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	name := inv.args[0]
	if err := checkRole(inv); err != nil {
		return err
	}
	pw, err := readPasswordFile(inv)
	if err != nil {
		return err
	}
	if err := checkQRPath(inv.opts.qr.v); err != nil {
		return err
	}
	resp, _, err := request(ctx, inv, "add operator "+name, mnguardv1.AdminServiceClient.AddOperator,
		&mnguardv1.AddOperatorRequest{Name: name, Role: inv.opts.role.v, Password: pw})
	if err != nil {
		return err
	}
	o := resp.GetOperator()
	return inv.writeOperatorSecret(w, o, resp.GetOtpauthUrl(), resp.GetSecret(),
		fmt.Sprintf("added operator %s (%s): console sign-in needs the password and a code from this authenticator", name, o.GetRole()))
}

func operatorsResetTOTP(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	name := inv.args[0]
	if err := checkQRPath(inv.opts.qr.v); err != nil {
		return err
	}
	resp, _, err := request(ctx, inv, "reset TOTP of operator "+name, mnguardv1.AdminServiceClient.ResetOperatorTotp,
		&mnguardv1.ResetOperatorTotpRequest{Name: name})
	if err != nil {
		return err
	}
	return inv.writeOperatorSecret(w, resp.GetOperator(), resp.GetOtpauthUrl(), resp.GetSecret(),
		"reset the TOTP secret of operator "+name+": codes of the old authenticator no longer work")
}

func operatorsDisable(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	name := inv.args[0]
	resp, _, err := request(ctx, inv, "disable operator "+name, mnguardv1.AdminServiceClient.DisableOperator, &mnguardv1.DisableOperatorRequest{Name: name})
	if err != nil {
		return err
	}
	return inv.writeOperator(w, resp, "disabled operator "+name+": its console sessions end and its API tokens are refused")
}

func operatorsEnable(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	name := inv.args[0]
	resp, _, err := request(ctx, inv, "enable operator "+name, mnguardv1.AdminServiceClient.EnableOperator, &mnguardv1.EnableOperatorRequest{Name: name})
	if err != nil {
		return err
	}
	return inv.writeOperator(w, resp, "enabled operator "+name)
}

func operatorsUnlock(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	name := inv.args[0]
	resp, _, err := request(ctx, inv, "unlock operator "+name, mnguardv1.AdminServiceClient.UnlockOperator, &mnguardv1.UnlockOperatorRequest{Name: name})
	if err != nil {
		return err
	}
	return inv.writeOperator(w, resp, "unlocked operator "+name)
}

func operatorsSetRole(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	name := inv.args[0]
	if err := checkRole(inv); err != nil {
		return err
	}
	resp, _, err := request(ctx, inv, "set role of operator "+name, mnguardv1.AdminServiceClient.SetOperatorRole,
		&mnguardv1.SetOperatorRoleRequest{Name: name, Role: inv.opts.role.v})
	if err != nil {
		return err
	}
	return inv.writeOperator(w, resp, "operator "+name+" is now "+resp.GetOperator().GetRole())
}

func operatorsSetPassword(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	name := inv.args[0]
	pw, err := readPasswordFile(inv)
	if err != nil {
		return err
	}
	resp, _, err := request(ctx, inv, "set password of operator "+name, mnguardv1.AdminServiceClient.SetOperatorPassword,
		&mnguardv1.SetOperatorPasswordRequest{Name: name, Password: pw})
	if err != nil {
		return err
	}
	return inv.writeOperator(w, resp, "set a new password for operator "+name)
}

func operatorsDelete(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	name := inv.args[0]
	resp, _, err := request(ctx, inv, "delete operator "+name, mnguardv1.AdminServiceClient.DeleteOperator, &mnguardv1.DeleteOperatorRequest{Name: name})
	if err != nil {
		return err
	}
	switch inv.format {
	case formatJSON:
		return writeProtoJSON(w, resp)
	case formatCSV:
		return writeFields(w, inv.format, []field{kv("deleted", "", name)})
	}
	fmt.Fprintf(w, "deleted operator %s with its API tokens and console sessions\n", sanitize(name))
	return nil
}

func operatorsToken(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	name := inv.args[0]
	req := &mnguardv1.CreateOperatorTokenRequest{Name: name, Note: inv.opts.note.v}
	if inv.opts.ttl.set {
		d, err := parseTTL(inv.cmd.name, inv.opts.ttl.v)
		if err != nil {
			return err
		}
		req.TtlSeconds = uint32(d / time.Second)
	}
	resp, _, err := request(ctx, inv, "create API token for operator "+name, mnguardv1.AdminServiceClient.CreateOperatorToken, req)
	if err != nil {
		return err
	}
	switch inv.format {
	case formatJSON:
		return writeProtoJSON(w, resp)
	case formatCSV:
		type T = *mnguardv1.CreateOperatorTokenResponse
		return writeList(w, inv.format, []column[T]{
			{"", "token", nil, func(t T) string { return t.GetToken() }},
			{"", "id", nil, func(t T) string { return t.GetId() }},
			{"", "expires_at", nil, func(t T) string { return inv.timeText(t.GetExpiresAt()) }},
		}, []T{resp})
	}
	// The bare token first, alone on its line, to copy or pipe.
	fmt.Fprintln(w, sanitize(resp.GetToken()))
	expires := "never expires"
	if resp.GetExpiresAt() != nil {
		expires = "expires " + inv.timeRel(resp.GetExpiresAt())
	}
	fmt.Fprintf(w, "API token %s acting as operator %s, %s; the token itself is not shown again\n", sanitize(resp.GetId()), sanitize(name), expires)
	return nil
}

func operatorsRevokeToken(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	id := inv.args[0]
	resp, _, err := request(ctx, inv, "revoke API token "+id, mnguardv1.AdminServiceClient.RevokeOperatorToken, &mnguardv1.RevokeOperatorTokenRequest{Id: id})
	if err != nil {
		return err
	}
	switch inv.format {
	case formatJSON:
		return writeProtoJSON(w, resp)
	case formatCSV:
		return writeFields(w, inv.format, []field{kv("revoked", "", id)})
	}
	fmt.Fprintf(w, "revoked API token %s: the server refuses it from now on\n", sanitize(id))
	return nil
}
