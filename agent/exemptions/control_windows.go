package exemptions

import (
	"context"
	"net"

	"github.com/Microsoft/go-winio"
)

// ControlPipe is the named pipe of the agent's control socket on Windows.
const ControlPipe = `\\.\pipe\mnguard-agent-control`

// ControlAddress returns where the agent serves its control socket: on
// Windows the named pipe ControlPipe, whatever the state directory.
func ControlAddress(stateDir string) string { return ControlPipe }

func dialControl(ctx context.Context, path string) (net.Conn, error) {
	return winio.DialPipeContext(ctx, path)
}
