package main

import (
	"regexp"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// parseCount validates a flag holding a whole number from lo to hi.
func parseCount(inv *invocation, name, v string, lo, hi uint64) (uint64, error) {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, usagef("%s: invalid --%s %q: want a whole number from %d to %d", inv.cmd.name, name, v, lo, hi)
	}
	return n, nil
}

// parseTTL validates a --ttl flag: a positive Go duration of at least a
// second and at most maxTokenTTL.
func parseTTL(cmd, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		return 0, usagef("%s: invalid --ttl %q: want a duration such as 24h or 90m", cmd, v)
	case d <= 0:
		return 0, usagef("%s: invalid --ttl %q: must be positive", cmd, v)
	case d < time.Second:
		return 0, usagef("%s: invalid --ttl %q: must be at least 1s", cmd, v)
	case d > maxTokenTTL:
		return 0, usagef("%s: invalid --ttl %q: must be at most 8760h (a year)", cmd, v)
	}
	return d, nil
}

// checkText validates free text sent to the server: at most limit bytes of
// UTF-8 without control characters, as the server wants it.
func checkText(inv *invocation, name, v string, limit int) error {
	switch {
	case len(v) > limit:
		return usagef("%s: invalid --%s: longer than %d bytes", inv.cmd.name, name, limit)
	case !utf8.ValidString(v):
		return usagef("%s: invalid --%s: not valid UTF-8", inv.cmd.name, name)
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return usagef("%s: invalid --%s: contains a control character", inv.cmd.name, name)
		}
	}
	return nil
}

var dayRE = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}$`)

// parseDay validates a flag holding a day, YYYY-MM-DD, and returns its
// midnight in loc.
func parseDay(inv *invocation, name, v string, loc *time.Location) (time.Time, error) {
	if !dayRE.MatchString(v) {
		return time.Time{}, usagef("%s: invalid --%s %q: want a day such as 2026-05-01", inv.cmd.name, name, v)
	}
	d, err := time.ParseInLocation(time.DateOnly, v, loc)
	if err != nil {
		return time.Time{}, usagef("%s: invalid --%s %q: no such day", inv.cmd.name, name, v)
	}
	if d.Year() < 2000 || d.Year() > 2200 {
		return time.Time{}, usagef("%s: invalid --%s %q: out of range", inv.cmd.name, name, v)
	}
	return d, nil
}

// parseTime validates a flag holding a time: RFC 3339, or a day
// YYYY-MM-DD in the invocation's time zone. A day means its start, or with
// endOfDay the start of the next day, so that an exclusive bound includes
// the day.
func parseTime(inv *invocation, name, v string, endOfDay bool) (time.Time, error) {
	if dayRE.MatchString(v) {
		d, err := parseDay(inv, name, v, inv.loc)
		if err != nil {
			return time.Time{}, err
		}
		if endOfDay {
			d = d.AddDate(0, 0, 1)
		}
		return d, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, usagef("%s: invalid --%s %q: want a time such as 2026-05-01T09:00:00+09:00 (RFC 3339) or a day such as 2026-05-01", inv.cmd.name, name, v)
	}
	if t.Year() < 2000 || t.Year() > 2200 {
		return time.Time{}, usagef("%s: invalid --%s %q: out of range", inv.cmd.name, name, v)
	}
	return t, nil
}

// timeRange validates --since and --until; each is nil when not given.
// --until is exclusive, except that a day is included in full.
func (inv *invocation) timeRange() (since, until *timestamppb.Timestamp, err error) {
	o := inv.opts
	var s, u time.Time
	if o.since.v != "" {
		if s, err = parseTime(inv, "since", o.since.v, false); err != nil {
			return nil, nil, err
		}
		since = timestamppb.New(s)
	}
	if o.until.v != "" {
		if u, err = parseTime(inv, "until", o.until.v, true); err != nil {
			return nil, nil, err
		}
		until = timestamppb.New(u)
	}
	if since != nil && until != nil && !s.Before(u) {
		return nil, nil, usagef("%s: --since %q is not before --until %q: the period is empty", inv.cmd.name, o.since.v, o.until.v)
	}
	return since, until, nil
}
