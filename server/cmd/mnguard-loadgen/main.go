// Command mnguard-loadgen simulates many mnguard agents against one or more
// collectors (real enrollment, one mutual-TLS connection and one Subscribe
// stream per terminal, posture reports on a schedule) and prints the rates
// and latencies it sees, and, with 'baseline-server', runs the plain grpc-go
// peer its per-connection cost is compared with.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
