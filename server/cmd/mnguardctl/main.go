// Command mnguardctl is the operator CLI of mnguard: it lists, shows and
// revokes terminals and their compliance, creates enrollment tokens, reads
// events, manages TOTP users, exemptions and operators, reads and verifies
// the audit log and fetches the self-inspection report, through the
// collector's AdminService, over TLS pinned to the collector's CA and with an
// operator API token.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
