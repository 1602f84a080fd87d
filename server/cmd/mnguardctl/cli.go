package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// usageError is a mistake in the command line. It exits with status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// verdictError is a failure whose output is the verdict itself, such as a
// broken audit chain in JSON: the output is written all the same, and the
// command exits with status 1 and the error on stderr.
type verdictError struct{ err error }

func (e verdictError) Error() string { return e.err.Error() }
func (e verdictError) Unwrap() error { return e.err }

// app is one run of mnguardctl, with everything it touches outside itself.
type app struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// dial connects to the admin API; tests replace it.
	dial func(connConfig) (*connection, error)
	now  func() time.Time
	// loc is the time zone of times in table and CSV output.
	loc *time.Location
}

// run runs mnguardctl with args (without the program name) and returns the
// exit status: 0 on success, 2 for a usage error, 1 for any other failure,
// which it reports as one line on stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{
		stdout: stdout,
		stderr: stderr,
		getenv: getenv,
		dial:   dialAdmin,
		now:    time.Now,
		loc:    time.Local,
	}
	return a.run(ctx, args)
}

func (a *app) run(ctx context.Context, args []string) int {
	err := a.exec(ctx, args)
	if err == nil {
		return 0
	}
	fmt.Fprintf(a.stderr, "mnguardctl: %s\n", oneLine(err.Error()))
	if errors.As(err, new(usageError)) {
		return 2
	}
	return 1
}

func (a *app) exec(ctx context.Context, args []string) error {
	opts, pos, err := parseArgs(args)
	if err != nil {
		return usagef("bad command line: %v (see 'mnguardctl help')", err)
	}
	if len(pos) > 0 && pos[0] == "help" {
		return a.help(pos[1:])
	}
	if opts.help {
		return a.help(pos)
	}
	if len(pos) == 0 {
		return usagef("missing command: run 'mnguardctl help' for the list")
	}
	cmd, rest, err := lookup(pos)
	if err != nil {
		return err
	}
	if err := cmd.check(opts, rest); err != nil {
		return err
	}
	format, err := resolveFormat(cmd, opts, a.getenv)
	if err != nil {
		return err
	}
	inv := &invocation{app: a, cmd: cmd, opts: opts, args: rest, format: format}
	// Output is written only once the command succeeded, so a failure never
	// leaves half a table or a truncated JSON document on stdout; only a
	// verdict (see verdictError) is written with its failure.
	var out bytes.Buffer
	if err := cmd.run(ctx, inv, &out); err != nil {
		if errors.As(err, new(verdictError)) {
			if _, werr := a.stdout.Write(out.Bytes()); werr != nil {
				return fmt.Errorf("write output: %w", werr)
			}
		}
		return err
	}
	if _, err := a.stdout.Write(out.Bytes()); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// invocation is a parsed command line about to run.
type invocation struct {
	*app
	cmd    *command
	opts   *options
	args   []string
	format string
}

// connect resolves the connection settings and dials the admin API. The
// caller closes the connection.
func (inv *invocation) connect() (*connection, error) {
	cfg, err := resolveConn(inv.opts, inv.getenv)
	if err != nil {
		return nil, err
	}
	return inv.dial(cfg)
}

// Output formats.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatCSV   = "csv"
	formatHTML  = "html"
)

// resolveFormat returns the output format: table, json or csv from
// --output or MNGUARD_OUTPUT; or, for a command that prints a document of
// its own formats (cmd.formats), one of those from --output alone, the
// first by default.
func resolveFormat(cmd *command, o *options, getenv func(string) string) (string, error) {
	if len(cmd.formats) > 0 {
		f := strings.ToLower(o.output.v)
		switch {
		case f == "":
			return cmd.formats[0], nil
		case slices.Contains(cmd.formats, f):
			return f, nil
		}
		return "", usagef("%s: invalid output format %q from --output: want %s", cmd.name, o.output.v, orList(cmd.formats))
	}
	f, from := o.output.or(getenv, "MNGUARD_OUTPUT", "--output")
	switch strings.ToLower(f) {
	case "", formatTable:
		return formatTable, nil
	case formatJSON:
		return formatJSON, nil
	case formatCSV:
		return formatCSV, nil
	}
	return "", usagef("invalid output format %q from %s: want table, json or csv", f, from)
}

// stringFlag is a flag value that remembers whether it was given. Defining it
// does not reset it, so one options value serves every flag name.
type stringFlag struct {
	v   string
	set bool
}

func (f *stringFlag) String() string {
	if f == nil {
		return ""
	}
	return f.v
}

func (f *stringFlag) Set(s string) error {
	f.v, f.set = s, true
	return nil
}

// listFlag is a repeatable flag value: every use adds one.
type listFlag struct {
	v   []string
	set bool
}

func (f *listFlag) String() string {
	if f == nil {
		return ""
	}
	return strings.Join(f.v, " ")
}

func (f *listFlag) Set(s string) error {
	f.v, f.set = append(f.v, s), true
	return nil
}

// or returns the flag's value, or else the environment variable env, and
// says which of the two (flagName or env) it came from. Flags beat the
// environment; an empty value counts as not given.
func (f *stringFlag) or(getenv func(string) string, env, flagName string) (value, from string) {
	if f.v != "" {
		return f.v, flagName
	}
	if env != "" {
		if v := getenv(env); v != "" {
			return v, env
		}
	}
	return "", flagName
}

// options holds every flag of every command; a command accepts the global
// flags and its own, see command.check.
type options struct {
	// Global flags.
	server, token, tokenFile, caPin, timeout, output stringFlag
	help                                             bool
	// Command flags.
	reason, ttl, uses, note, terminal, limit, dataDir  stringFlag
	qr, format, pskFile, passwordFile, user, challenge stringFlag
	device, duration, ticket                           stringFlag
	role, state, check, search, sort, offset           stringFlag
	eventType, since, until, action, beforeID          stringFlag
	pageSize                                           stringFlag
	from, to, lang, out                                stringFlag
	assign, expectVersion                              stringFlag
	replace, allowNoSerial, active, desc               bool
	// Network policy: repeatable lists and switches.
	allowNetwork, allowDNS                              listFlag
	enforceNetwork, noEnforceNetwork, noNetworks, noDNS bool

	// set holds the canonical names of the flags given.
	set map[string]bool
}

// pageSizeFlag is the flag of every list command: how many items each
// request asks for; all pages are listed whatever it is.
var pageSizeFlag = flagDoc{"page-size", "N", "items asked for per request, 1 to 1000 (default 1000); every page is listed", ""}

// globalFlags are accepted by every command, before or after it.
var globalFlags = []flagDoc{
	{"server", "HOST:PORT", "address of the collector's admin API", "MNGUARD_SERVER"},
	{"token-file", "PATH", "file holding the operator API token", "MNGUARD_TOKEN_FILE"},
	{"token", "TOKEN", "the operator API token (visible to other local users; prefer --token-file)", "MNGUARD_TOKEN"},
	{"ca-pin", "sha256:HEX", "fingerprint of the collector's CA", "MNGUARD_CA_PIN"},
	{"timeout", "DURATION", "time limit of each request (default 10s)", "MNGUARD_TIMEOUT"},
	{"output", "FORMAT", "table, json or csv (default table; reports: html, csv or json); -o for short", "MNGUARD_OUTPUT"},
	{"help", "", "show help; -h for short", ""},
}

// flagAliases maps short flag names to canonical ones.
var flagAliases = map[string]string{"o": "output", "h": "help"}

// parseArgs parses flags anywhere on the command line and returns the
// positional arguments in order. "--" ends the flags.
func parseArgs(args []string) (*options, []string, error) {
	o := &options{set: map[string]bool{}}
	fs := flag.NewFlagSet("mnguardctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for name, v := range map[string]*stringFlag{
		"server": &o.server, "token": &o.token, "token-file": &o.tokenFile,
		"ca-pin": &o.caPin, "timeout": &o.timeout, "output": &o.output, "o": &o.output,
		"reason": &o.reason, "ttl": &o.ttl, "uses": &o.uses, "note": &o.note,
		"terminal": &o.terminal, "limit": &o.limit, "data-dir": &o.dataDir,
		"qr": &o.qr, "format": &o.format, "psk-file": &o.pskFile, "password-file": &o.passwordFile,
		"user": &o.user, "challenge": &o.challenge,
		"device": &o.device, "duration": &o.duration, "ticket": &o.ticket,
		"role": &o.role, "state": &o.state, "check": &o.check, "search": &o.search, "sort": &o.sort,
		"offset": &o.offset, "type": &o.eventType, "since": &o.since, "until": &o.until,
		"action": &o.action, "before-id": &o.beforeID, "from": &o.from, "to": &o.to, "lang": &o.lang,
		"out": &o.out, "assign": &o.assign, "expect-version": &o.expectVersion, "page-size": &o.pageSize,
	} {
		fs.Var(v, name, "")
	}
	fs.Var(&o.allowNetwork, "allow-network", "")
	fs.Var(&o.allowDNS, "allow-dns", "")
	fs.BoolVar(&o.enforceNetwork, "enforce-network", false, "")
	fs.BoolVar(&o.noEnforceNetwork, "no-enforce-network", false, "")
	fs.BoolVar(&o.noNetworks, "no-networks", false, "")
	fs.BoolVar(&o.noDNS, "no-dns", false, "")
	fs.BoolVar(&o.replace, "replace", false, "")
	fs.BoolVar(&o.allowNoSerial, "allow-no-serial", false, "")
	fs.BoolVar(&o.active, "active", false, "")
	fs.BoolVar(&o.desc, "desc", false, "")
	fs.BoolVar(&o.help, "help", false, "")
	fs.BoolVar(&o.help, "h", false, "")

	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if endedByDashDash(args[:len(args)-len(rest)]) {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	fs.Visit(func(f *flag.Flag) {
		name := f.Name
		if c, ok := flagAliases[name]; ok {
			name = c
		}
		o.set[name] = true
	})
	return o, pos, nil
}

// endedByDashDash reports whether the flag package stopped after consumed
// because of a "--" terminator, not because "--" was the value of a flag.
func endedByDashDash(consumed []string) bool {
	n := len(consumed)
	if n == 0 || consumed[n-1] != "--" {
		return false
	}
	if n >= 2 {
		prev := strings.TrimLeft(consumed[n-2], "-")
		isFlag := strings.HasPrefix(consumed[n-2], "-") && consumed[n-2] != "--"
		if isFlag && !strings.Contains(prev, "=") && !boolFlags[prev] {
			return false // "--" was the value of the flag before it
		}
	}
	return true
}

// boolFlags take no value.
var boolFlags = map[string]bool{"h": true, "help": true, "replace": true, "allow-no-serial": true, "active": true, "desc": true,
	"enforce-network": true, "no-enforce-network": true, "no-networks": true, "no-dns": true}

// flagDoc describes a flag for help and validation.
type flagDoc struct {
	name, arg, doc, env string
}

// command is one mnguardctl command.
type command struct {
	name    string   // words that select it, e.g. "terminals list"
	args    []string // positional arguments
	flags   []flagDoc
	summary string
	// formats are the output formats of a command that prints a document
	// rather than a table, the default first; nil for table, json and csv.
	formats []string
	run     func(ctx context.Context, inv *invocation, w *bytes.Buffer) error
}

func (c *command) usage() string {
	var b strings.Builder
	b.WriteString(c.name)
	for _, a := range c.args {
		b.WriteString(" " + a)
	}
	for _, f := range c.flags {
		if f.arg == "" {
			fmt.Fprintf(&b, " [--%s]", f.name)
			continue
		}
		fmt.Fprintf(&b, " [--%s %s]", f.name, f.arg)
	}
	return b.String()
}

// check validates the positional arguments and that every flag given
// belongs to the global set or to the command.
func (c *command) check(o *options, args []string) error {
	for _, name := range slices.Sorted(maps.Keys(o.set)) {
		if !c.accepts(name) {
			return usagef("%s: flag --%s does not apply to this command (see 'mnguardctl help %s')", c.name, name, c.name)
		}
	}
	switch {
	case len(args) < len(c.args):
		return usagef("%s: missing %s (usage: mnguardctl %s)", c.name, c.args[len(args)], c.usage())
	case len(args) > len(c.args):
		return usagef("%s: unexpected argument %q (usage: mnguardctl %s)", c.name, args[len(c.args)], c.usage())
	}
	for i, a := range args {
		if a == "" {
			return usagef("%s: %s is empty", c.name, c.args[i])
		}
	}
	return nil
}

func (c *command) accepts(name string) bool {
	for _, f := range globalFlags {
		if f.name == name {
			return true
		}
	}
	for _, f := range c.flags {
		if f.name == name {
			return true
		}
	}
	return false
}

var commands = []*command{
	{
		name: "terminals list",
		flags: []flagDoc{
			{"state", "STATE", "only terminals in this compliance state: compliant, non-compliant, stale or revoked", ""},
			{"check", "NAME", "only terminals failing this check: " + orList(complianceChecks), ""},
			{"search", "TEXT", "only terminals whose host name, ID, an IP address or a device serial contains TEXT", ""},
			{"sort", "KEY", "sort by hostname (default), state, last_seen, agent_version or enrolled", ""},
			{"desc", "", "sort in descending order", ""},
			{"limit", "N", "at most N terminals (default all, at most 100000)", ""},
			{"offset", "N", "skip the first N terminals", ""},
			pageSizeFlag,
		},
		summary: "list enrolled terminals with their compliance",
		run:     terminalsList,
	},
	{
		name:    "terminals show",
		args:    []string{"ID"},
		summary: "show a terminal, its compliance checks and its latest posture",
		run:     terminalsShow,
	},
	{
		name:    "terminals revoke",
		args:    []string{"ID"},
		flags:   []flagDoc{{"reason", "TEXT", "why, for the audit log", ""}},
		summary: "revoke a terminal's certificates; it must enroll again to report",
		run:     terminalsRevoke,
	},
	{
		name: "tokens create",
		flags: []flagDoc{
			{"ttl", "24h", "lifetime, a Go duration up to 8760h", ""},
			{"uses", "1", "number of enrollments it allows", ""},
			{"note", "TEXT", "what it is for", ""},
		},
		summary: "create an enrollment token; the token is the first line of table output",
		run:     tokensCreate,
	},
	{
		name:    "tokens list",
		flags:   []flagDoc{pageSizeFlag},
		summary: "list enrollment tokens",
		run:     tokensList,
	},
	{
		name: "events list",
		flags: []flagDoc{
			{"terminal", "ID", "only this terminal's events", ""},
			{"type", "TYPE", "only events of this type (media.attached), or of every type under a prefix ending in a dot (media.)", ""},
			{"since", "TIME", "only events received at or after TIME: RFC 3339 or YYYY-MM-DD (local midnight)", ""},
			{"until", "TIME", "only events received before TIME: RFC 3339, or YYYY-MM-DD to include that day", ""},
			{"limit", "N", "at most N events, newest first (default 100, at most 10000000)", ""},
			pageSizeFlag,
		},
		summary: "list recent events, newest first",
		run:     eventsList,
	},
	{
		name:    "users enroll",
		args:    []string{"NAME"},
		flags:   []flagDoc{{"qr", "FILE.png", "also write the QR code as a PNG (0600; refuses to overwrite)", ""}},
		summary: "enroll a user for TOTP: prints the otpauth:// URL, a QR code and ten recovery codes, once",
		run:     usersEnroll,
	},
	{
		name:    "users confirm",
		args:    []string{"NAME", "CODE"},
		summary: "confirm a pending enrollment with a first code from the user's authenticator",
		run:     usersConfirm,
	},
	{
		name:    "users list",
		flags:   []flagDoc{pageSizeFlag},
		summary: "list TOTP users",
		run:     usersList,
	},
	{
		name:    "users show",
		args:    []string{"NAME"},
		summary: "show a TOTP user",
		run:     usersShow,
	},
	{
		name:    "users unlock",
		args:    []string{"NAME"},
		summary: "unlock a user locked after too many wrong codes",
		run:     usersUnlock,
	},
	{
		name:    "users reset",
		args:    []string{"NAME"},
		flags:   []flagDoc{{"qr", "FILE.png", "also write the QR code as a PNG (0600; refuses to overwrite)", ""}},
		summary: "give a user a new secret and new recovery codes (lost phone); pending until confirmed",
		run:     usersReset,
	},
	{
		name:    "users delete",
		args:    []string{"NAME"},
		summary: "delete a TOTP user; the user can no longer log in to terminals",
		run:     usersDelete,
	},
	{
		name: "users import",
		args: []string{"FILE"},
		flags: []flagDoc{
			{"format", "csv|pskc", "the file's format (default: from its content)", ""},
			{"psk-file", "PATH", "file holding the hex pre-shared key of an encrypted PSKC file", ""},
			{"password-file", "PATH", "file holding the password of a PBKDF2-protected PSKC file", ""},
			{"assign", "MAP.csv", "CSV of serial,user lines giving the file's tokens to users (for files that name no user)", ""},
			{"replace", "", "replace the tokens of users (and unassigned serials) that exist already", ""},
		},
		summary: "import hardware-token seeds, TOTP or HOTP, up to 100,000 tokens (CSV: serial,user,seed,digits,period[,algorithm]; or PSKC XML); tokens that name no user are kept unassigned",
		run:     usersImport,
	},
	{
		name:    "users tokens",
		flags:   []flagDoc{pageSizeFlag},
		summary: "list imported hardware tokens that belong to no user yet (they log nobody in)",
		run:     usersTokens,
	},
	{
		name:    "users assign",
		args:    []string{"SERIAL", "NAME"},
		flags:   []flagDoc{{"replace", "", "give the token to a user that exists already, replacing its token", ""}},
		summary: "give an unassigned hardware token to a user, pending until the user's first code",
		run:     usersAssign,
	},
	{
		name:    "users resync",
		args:    []string{"NAME", "CODE1", "CODE2"},
		summary: "resynchronise a drifting token with two consecutive codes",
		run:     usersResync,
	},
	{
		name:    "users recovery-codes",
		args:    []string{"NAME"},
		summary: "replace a user's recovery codes with ten new ones",
		run:     usersRecoveryCodes,
	},
	{
		name: "users offline-code",
		flags: []flagDoc{
			{"terminal", "ID", "the terminal that shows the challenge (required)", ""},
			{"user", "NAME", "the user logging in (required)", ""},
			{"challenge", "CODE", "the challenge shown at the terminal's login prompt (required)", ""},
		},
		summary: "answer a cut-off terminal's login challenge with a one-time offline login code",
		run:     usersOfflineCode,
	},
	{
		name: "exemptions issue",
		flags: []flagDoc{
			{"terminal", "ID", "the terminal (required)", ""},
			{"device", "VID:PID:SERIAL", "the one device made writable (required)", ""},
			{"duration", "1h", "how long, up to the collector's maximum (default 8h)", ""},
			{"reason", "TEXT", "why (required; recorded)", ""},
			{"ticket", "REF", "the helpdesk ticket (required; recorded)", ""},
			{"allow-no-serial", "", "exempt a device without a serial number, and every twin of it (recorded)", ""},
		},
		summary: "let one device on one terminal be written for a bounded time; pushed to the agent at once",
		run:     exemptionsIssue,
	},
	{
		name:    "exemptions revoke",
		args:    []string{"ID"},
		flags:   []flagDoc{{"reason", "TEXT", "why, for the audit log", ""}},
		summary: "end an exemption now; the device is read-only again within a second on a connected terminal",
		run:     exemptionsRevoke,
	},
	{
		name: "exemptions list",
		flags: []flagDoc{
			{"terminal", "ID", "only this terminal's exemptions", ""},
			{"active", "", "only exemptions in force", ""},
			pageSizeFlag,
		},
		summary: "list exemptions, newest first",
		run:     exemptionsList,
	},
	{
		name: "exemptions offline-code",
		flags: []flagDoc{
			{"terminal", "ID", "the terminal that shows the challenge (required)", ""},
			{"challenge", "CODE", "the challenge 'mnguard-agent exemption challenge' printed (required)", ""},
			{"device", "VID:PID:SERIAL", "the device, when the terminal has not reported it", ""},
			{"reason", "TEXT", "why (required; recorded)", ""},
			{"ticket", "REF", "the helpdesk ticket (required; recorded)", ""},
			{"allow-no-serial", "", "the device has no serial number (recorded)", ""},
		},
		summary: "answer a cut-off terminal's exemption challenge with a one-time response code",
		run:     exemptionsOfflineCode,
	},
	{
		name: "operators add",
		args: []string{"NAME"},
		flags: []flagDoc{
			{"role", "ROLE", "admin, helpdesk or auditor (required)", ""},
			{"password-file", "PATH", "file whose first line is the console password, at least 12 characters (required)", ""},
			{"qr", "FILE.png", "also write the QR code as a PNG (0600; refuses to overwrite)", ""},
		},
		summary: "add an operator: prints the otpauth:// URL and QR code of the operator's console TOTP, once",
		run:     operatorsAdd,
	},
	{
		name:    "operators list",
		flags:   []flagDoc{pageSizeFlag},
		summary: "list operators",
		run:     operatorsList,
	},
	{
		name:    "operators show",
		args:    []string{"NAME"},
		summary: "show an operator and its API tokens",
		run:     operatorsShow,
	},
	{
		name:    "operators disable",
		args:    []string{"NAME"},
		summary: "disable an operator: its console sessions end and its API tokens are refused",
		run:     operatorsDisable,
	},
	{
		name:    "operators enable",
		args:    []string{"NAME"},
		summary: "enable a disabled operator again",
		run:     operatorsEnable,
	},
	{
		name:    "operators delete",
		args:    []string{"NAME"},
		summary: "delete an operator with its API tokens and console sessions",
		run:     operatorsDelete,
	},
	{
		name:    "operators reset-totp",
		args:    []string{"NAME"},
		flags:   []flagDoc{{"qr", "FILE.png", "also write the QR code as a PNG (0600; refuses to overwrite)", ""}},
		summary: "give an operator a new console TOTP secret (lost phone); prints the URL and QR code once",
		run:     operatorsResetTOTP,
	},
	{
		name:    "operators set-role",
		args:    []string{"NAME"},
		flags:   []flagDoc{{"role", "ROLE", "admin, helpdesk or auditor (required)", ""}},
		summary: "change an operator's role",
		run:     operatorsSetRole,
	},
	{
		name:    "operators set-password",
		args:    []string{"NAME"},
		flags:   []flagDoc{{"password-file", "PATH", "file whose first line is the new password, at least 12 characters (required)", ""}},
		summary: "replace an operator's console password",
		run:     operatorsSetPassword,
	},
	{
		name:    "operators unlock",
		args:    []string{"NAME"},
		summary: "unlock an operator locked after too many failed sign-ins",
		run:     operatorsUnlock,
	},
	{
		name: "operators token",
		args: []string{"NAME"},
		flags: []flagDoc{
			{"ttl", "DURATION", "lifetime, a Go duration up to 8760h (default: no expiry)", ""},
			{"note", "TEXT", "what it is for", ""},
		},
		summary: "create an API token that acts in the operator's name; the token is the first line of table output",
		run:     operatorsToken,
	},
	{
		name:    "operators revoke-token",
		args:    []string{"ID"},
		summary: "revoke an operator's API token",
		run:     operatorsRevokeToken,
	},
	{
		name:    "policy show",
		summary: "show the network policy agents enforce: allowed networks and ports, DNS servers, enforcement, the collector's addresses",
		run:     policyShow,
	},
	{
		name: "policy set",
		flags: []flagDoc{
			{"allow-network", "CIDR[@tcp/443,udp/53,...]", "an allowed network, host bits zero, with the remote ports allowed in it (default every port); repeatable, replaces the list", ""},
			{"allow-dns", "IP", "an allowed DNS server; repeatable, replaces the list", ""},
			{"no-networks", "", "allow no network (only the collector)", ""},
			{"no-dns", "", "allow no DNS server", ""},
			{"enforce-network", "", "agents block traffic outside the policy", ""},
			{"no-enforce-network", "", "agents only report what breaks isolation", ""},
			{"expect-version", "VERSION", "refuse unless this network policy version is in force (default: the version read before the change)", ""},
		},
		summary: "change the network policy; lists not given are kept; pushed to connected agents at once, audited",
		run:     policySet,
	},
	{
		name: "audit list",
		flags: []flagDoc{
			{"limit", "N", "at most N entries, newest first (default 100, at most 10000000)", ""},
			{"before-id", "N", "only entries with an ID below N (the next page)", ""},
			{"since", "TIME", "only entries at or after TIME: RFC 3339 or YYYY-MM-DD (local midnight)", ""},
			{"until", "TIME", "only entries before TIME: RFC 3339, or YYYY-MM-DD to include that day", ""},
			{"action", "PREFIX", "only entries whose action starts with PREFIX, e.g. exemption.", ""},
			pageSizeFlag,
		},
		summary: "list the audit log, newest first",
		run:     auditList,
	},
	{
		name:    "audit verify",
		summary: "verify the audit log's hash chain; prints the head to keep elsewhere, exits 1 when the chain is broken",
		run:     auditVerify,
	},
	{
		name: "reports self-inspection",
		flags: []flagDoc{
			{"from", "YYYY-MM-DD", "first day (required)", ""},
			{"to", "YYYY-MM-DD", "last day, included (required)", ""},
			{"output", "html|csv|json", "the report's format (default html; MNGUARD_OUTPUT does not apply); -o for short", ""},
			{"lang", "ja|en", "the report's language (default ja)", ""},
			{"out", "FILE", "write the report to FILE (0600; refuses to overwrite) instead of stdout", ""},
		},
		formats: []string{formatHTML, formatCSV, formatJSON},
		summary: "the Art. 7 self-inspection report for a period, in the collector's time zone",
		run:     reportsSelfInspection,
	},
	{
		name:    "ca pin",
		flags:   []flagDoc{{"data-dir", "DIR", "read DIR/ca.crt locally instead of asking the server", ""}},
		summary: "print the CA pin that agents and mnguardctl use to trust the collector",
		run:     caPin,
	},
	{
		name:    "whoami",
		summary: "show the operator and role of the API token, and the server's version",
		run:     whoami,
	},
	{
		name:    "version",
		summary: "print the version of mnguardctl",
		run:     printVersion,
	},
}

// lookup finds the command named by the first positional arguments and
// returns it with the remaining arguments.
func lookup(pos []string) (*command, []string, error) {
	for _, c := range commands {
		words := strings.Fields(c.name)
		if len(pos) >= len(words) && equalWords(pos[:len(words)], words) {
			return c, pos[len(words):], nil
		}
	}
	if subs := subcommands(pos[0]); len(subs) > 0 {
		if len(pos) == 1 {
			return nil, nil, usagef("%s: missing subcommand: want %s", pos[0], orList(subs))
		}
		return nil, nil, usagef("%s: unknown subcommand %q: want %s", pos[0], pos[1], orList(subs))
	}
	return nil, nil, usagef("unknown command %q: run 'mnguardctl help' for the list", pos[0])
}

func equalWords(a, b []string) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// subcommands returns the subcommands of a command group such as
// "terminals", or nil.
func subcommands(group string) []string {
	var subs []string
	for _, c := range commands {
		if g, sub, ok := strings.Cut(c.name, " "); ok && g == group {
			subs = append(subs, sub)
		}
	}
	return subs
}

func orList(words []string) string {
	switch len(words) {
	case 0:
		return ""
	case 1:
		return words[0]
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

const intro = `mnguardctl is the operator CLI of mnguard: terminals and their compliance,
enrollment tokens, events, TOTP users, exemptions, operators, the network policy,
the audit log and the self-inspection report. It talks to the collector's admin API over TLS, trusting
only the CA whose pin is given, with an operator API token.
`

// help prints help on topic (a command, a command group, or nothing for all)
// to stdout.
func (a *app) help(topic []string) error {
	var b bytes.Buffer
	switch {
	case len(topic) == 0:
		b.WriteString(intro)
		b.WriteString("\nUsage:\n  mnguardctl [flags] COMMAND [flags]\n\nCommands:\n")
		for _, c := range commands {
			writeCommandLine(&b, c)
		}
		b.WriteString("  help [COMMAND]\n      show help\n")
	default:
		var matched []*command
		prefix := strings.Join(topic, " ")
		for _, c := range commands {
			if c.name == prefix || strings.HasPrefix(c.name, prefix+" ") {
				matched = append(matched, c)
			}
		}
		if len(matched) == 0 {
			return usagef("help: unknown command %q: run 'mnguardctl help' for the list", prefix)
		}
		b.WriteString("Usage:\n")
		for _, c := range matched {
			fmt.Fprintf(&b, "  mnguardctl %s\n      %s\n", c.usage(), c.summary)
			for _, f := range c.flags {
				fmt.Fprintf(&b, "      --%s: %s\n", strings.TrimSpace(f.name+" "+f.arg), f.doc)
			}
		}
	}
	b.WriteString("\nFlags (before or after the command):\n")
	for _, f := range globalFlags {
		arg := ""
		if f.arg != "" {
			arg = " " + f.arg
		}
		env := ""
		if f.env != "" {
			env = " [$" + f.env + "]"
		}
		fmt.Fprintf(&b, "  --%s%s\n      %s%s\n", f.name, arg, f.doc, env)
	}
	b.WriteString("\nFlags beat environment variables. Give --token or --token-file, not both.\n")
	if len(topic) == 0 {
		b.WriteString(`
Examples:
  export MNGUARD_SERVER=collector.example:8443 MNGUARD_CA_PIN=sha256:... MNGUARD_TOKEN_FILE=~/.mnguard-token
  mnguardctl terminals list
  mnguardctl terminals list --state non-compliant --check media --sort last_seen
  mnguardctl tokens create --ttl 2h --uses 5 --note "new PCs, 2nd floor"
  mnguardctl events list --terminal ID --type media. --since 2026-04-01 -o csv > events.csv
  mnguardctl operators add sato --role helpdesk --password-file sato.pw --qr sato.png
  mnguardctl operators token sato --ttl 720h --note "sato's CLI"
  mnguardctl policy set --allow-network 198.51.100.0/24 --allow-network 2001:db8::/32@tcp/443,udp/53 --allow-dns 198.51.100.53
  mnguardctl policy set --enforce-network
  mnguardctl audit verify
  mnguardctl reports self-inspection --from 2026-04-01 --to 2026-04-30 --lang en --out report.html
  mnguardctl ca pin --data-dir /var/lib/mnguard    (on the collector)
`)
	}
	_, err := a.stdout.Write(b.Bytes())
	return err
}

func writeCommandLine(b *bytes.Buffer, c *command) {
	fmt.Fprintf(b, "  %s\n      %s\n", c.usage(), c.summary)
}

// oneLine makes s fit on one line of stderr.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
