//go:build !windows

package media

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// WarnUsers writes msg to the terminals of the users logged in, with
// wall(1) (util-linux). Without wall it fails with an error wrapping
// errors.ErrUnsupported.
func WarnUsers(ctx context.Context, msg string) error {
	wall, err := exec.LookPath("wall")
	if err != nil {
		return fmt.Errorf("warn users: %w (%w)", errors.ErrUnsupported, err)
	}
	cmd := exec.CommandContext(ctx, wall)
	cmd.Stdin = strings.NewReader(msg + "\n")
	// wall prints what the locale cannot as escapes: the message has
	// Japanese in it.
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("warn users: wall: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
