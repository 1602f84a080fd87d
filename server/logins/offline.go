package logins

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mnguard/mnguard/internal/offlinecode"
	"github.com/mnguard/mnguard/server/store"
)

// OfflineLoginCode answers the challenge that a terminal cut off from the
// collector shows at its login prompt: a one-time code, bound to terminal,
// user and challenge, under the terminal's offline key. The terminal must
// be enrolled and active and the user must exist and not be locked. The
// code is returned grouped for reading out ("12345-67890") with the time
// after which the terminal refuses it.
func (s *Service) OfflineLoginCode(ctx context.Context, terminalID, user, challenge string) (string, time.Time, error) {
	if err := ValidateName(user); err != nil {
		return "", time.Time{}, err
	}
	c, err := offlinecode.Normalize(challenge, offlinecode.ChallengeDigits)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: challenge: %v", ErrInvalid, err)
	}
	t, err := s.st.Terminal(ctx, terminalID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "", time.Time{}, fmt.Errorf("terminal %s: %w", terminalID, ErrUnknownTerminal)
	case err != nil:
		return "", time.Time{}, fmt.Errorf("read terminal %s: %w", terminalID, err)
	case t.State != store.StateActive:
		return "", time.Time{}, fmt.Errorf("terminal %s: %w", terminalID, ErrTerminalRevoked)
	}
	u, err := s.user(ctx, user)
	if err != nil {
		return "", time.Time{}, err
	}
	if !u.LockedAt.IsZero() {
		return "", time.Time{}, fmt.Errorf("user %s: %w", user, ErrLocked)
	}
	w := offlinecode.WindowOf(s.p.Now())
	code, err := offlinecode.LoginCode(t.OfflineKey, terminalID, user, c, w)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("offline login code: %w", err)
	}
	return offlinecode.Format(code), offlinecode.WindowEnd(w), nil
}
