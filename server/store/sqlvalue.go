package store

import (
	"database/sql"
	"database/sql/driver"
	"fmt"
	"math"
	"time"
)

// Times are stored as BIGINT Unix nanoseconds, UTC; the zero time is NULL.
// That round-trips exactly (time.Time.Equal) for every time between the years
// 1678 and 2262 and sorts correctly in SQL on every backend.

// dbTime is a time.Time as a query argument.
type dbTime time.Time

// Value implements driver.Valuer.
func (t dbTime) Value() (driver.Value, error) {
	tt := time.Time(t)
	if tt.IsZero() {
		return nil, nil
	}
	n := tt.UnixNano()
	if !time.Unix(0, n).Equal(tt) {
		return nil, fmt.Errorf("time %s out of the storable range (years 1678 to 2262)", tt.Format(time.RFC3339))
	}
	return n, nil
}

// timeDest is a scan destination that fills a time.Time.
type timeDest struct{ t *time.Time }

// Scan implements sql.Scanner.
func (d timeDest) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*d.t = time.Time{}
	case int64:
		*d.t = time.Unix(0, v).UTC()
	default:
		return fmt.Errorf("scan time: want integer nanoseconds, got %T", src)
	}
	return nil
}

// scanTime returns a scan destination for *t.
func scanTime(t *time.Time) sql.Scanner { return timeDest{t} }

// storableTime reports an error unless t is zero or can be stored.
func storableTime(what string, t time.Time) error {
	if _, err := dbTime(t).Value(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// seqArg converts an event sequence number to its BIGINT column.
func seqArg(seq uint64) (int64, error) {
	if seq > math.MaxInt64 {
		return 0, fmt.Errorf("event seq %d out of range", seq)
	}
	return int64(seq), nil
}
