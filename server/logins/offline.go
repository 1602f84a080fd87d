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
// be enrolled and active and the user must exist, have confirmed the
// enrollment ([ErrNotConfirmed]: otherwise the code would be a second
// factor the helpdesk chose) and not be locked. The code is returned
// grouped for reading out ("12345-67890") with the time after which the
// terminal refuses it, only once op's audit entry and the user's notice
// for the next login are stored, in one transaction.
func (s *Service) OfflineLoginCode(ctx context.Context, terminalID, user, challenge string, op Operator) (string, time.Time, error) {
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
	usable := func(u store.User) error {
		switch {
		case !u.LockedAt.IsZero():
			return fmt.Errorf("user %s: %w", user, ErrLocked)
		case u.State != store.UserActive:
			return fmt.Errorf("user %s: %w", user, ErrNotConfirmed)
		}
		return nil
	}
	u, err := s.user(ctx, user)
	if err != nil {
		return "", time.Time{}, err
	}
	if err := usable(u); err != nil {
		return "", time.Time{}, err
	}
	key, err := s.st.OfflineKey(ctx, terminalID)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("offline key of terminal %s: %w", terminalID, err)
	}
	now := s.p.Now()
	w := offlinecode.WindowOf(now)
	code, err := offlinecode.LoginCode(key, terminalID, user, c, w)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("offline login code: %w", err)
	}
	until := offlinecode.WindowEnd(w)
	where := t.Hostname
	if where == "" {
		where = terminalID
	}
	a := op.audit(now, "user.offline_code", user, fmt.Sprintf("terminal %s, valid until %s", terminalID, until.UTC().Format(time.RFC3339)))
	// The checks again, in the transaction: a lock or reset meanwhile
	// refuses the code.
	if _, err := s.st.AddUserNotice(ctx, user, offlineNotice(now, op, where), usable, a); err != nil {
		if errors.Is(err, ErrLocked) || errors.Is(err, ErrNotConfirmed) {
			return "", time.Time{}, err
		}
		return "", time.Time{}, s.userErr("record offline code for", user, err)
	}
	return offlinecode.Format(code), until, nil
}
