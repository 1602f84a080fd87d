//go:build !windows

package exemptions

import (
	"context"
	"net"
	"path/filepath"
)

// ControlAddress returns where the agent with the given state directory
// serves its control socket: SocketName in that directory.
func ControlAddress(stateDir string) string { return filepath.Join(stateDir, SocketName) }

func dialControl(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", path)
}
