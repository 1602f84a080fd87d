//go:build windows

package media

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// WarnUsers shows msg in every session of the terminal with msg.exe.
func WarnUsers(ctx context.Context, msg string) error {
	out, err := exec.CommandContext(ctx, "msg.exe", "*", "/TIME:120", msg).CombinedOutput()
	if err != nil {
		return fmt.Errorf("warn users: msg.exe: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
