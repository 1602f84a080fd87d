package logins

import (
	"fmt"
	"strings"
)

// MaxNameBytes is the longest user name accepted.
const MaxNameBytes = 64

// ValidateName reports whether name is a user name the collector accepts:
// 1 to [MaxNameBytes] bytes of ASCII letters, digits, '.', '_', '-' and '@',
// starting with a letter, digit or '_'. That covers Linux login names
// (useradd's default rule), Active Directory sAMAccountNames and
// user@domain principal names. Names are case-sensitive, as Linux logins
// are. The error wraps [ErrInvalid] and quotes the name only when it is
// short.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: user name is empty", ErrInvalid)
	case len(name) > MaxNameBytes:
		return fmt.Errorf("%w: user name is %d bytes, at most %d", ErrInvalid, len(name), MaxNameBytes)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if nameByte(c) && (i > 0 || c != '.' && c != '-' && c != '@') {
			continue
		}
		what := fmt.Sprintf("character %q", rune(c))
		switch {
		case c >= 0x80:
			what = "a non-ASCII character"
		case c < 0x20 || c == 0x7f:
			what = fmt.Sprintf("control character %U", rune(c))
		case c == ' ':
			what = "a space"
		}
		if i == 0 {
			return fmt.Errorf("%w: user name %s: must start with a letter, digit or '_', not %s", ErrInvalid, quoteName(name), what)
		}
		return fmt.Errorf("%w: user name %s: %s at byte %d; allowed are letters, digits and . _ - @", ErrInvalid, quoteName(name), what, i+1)
	}
	return nil
}

func nameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-' || c == '@'
}

// quoteName quotes name for an error message; it is short (checked above)
// and %q escapes control characters.
func quoteName(name string) string {
	return fmt.Sprintf("%q", strings.ToValidUTF8(name, "\uFFFD"))
}
