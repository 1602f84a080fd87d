package spool

import (
	"bytes"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// Event types the spool stores about itself. The collector stores them
// like any other event; an auditor finds every loss there.
const (
	// EventDropped reports events that never reach the collector:
	// attribute reason is "spool_full" (dropped for room; count, first_seq,
	// last_seq) or "write_failed" (Append could not write, e.g. the disk
	// was full; count, first_time, last_time, and no sequence numbers,
	// since none were assigned).
	EventDropped = "spool.events_dropped"
	// EventCorruptFileSetAside reports a damaged spool file found at
	// start: attribute path is where it was kept, reason what was wrong.
	// The events it held are lost unless someone recovers them from it.
	EventCorruptFileSetAside = "spool.corrupt_file_set_aside"
)

// lossEvent is a spool.events_dropped event. first and last are sequence
// numbers (spool_full) or zero; from and to are times (write_failed) or
// zero.
func lossEvent(now time.Time, reason string, count, first, last uint64, from, to time.Time) *mnguardv1.Event {
	attrs := map[string]string{"reason": reason, "count": strconv.FormatUint(count, 10)}
	var msg string
	switch reason {
	case "spool_full":
		attrs["first_seq"] = strconv.FormatUint(first, 10)
		attrs["last_seq"] = strconv.FormatUint(last, 10)
		msg = fmt.Sprintf("%d events (seq %d to %d) were dropped undelivered: the agent's spool was full", count, first, last)
	default:
		attrs["first_time"] = from.UTC().Format(time.RFC3339Nano)
		attrs["last_time"] = to.UTC().Format(time.RFC3339Nano)
		msg = fmt.Sprintf("%d events between %s and %s were lost: the agent's spool could not be written", count,
			from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339))
	}
	return &mnguardv1.Event{
		Time: timestamppb.New(now), Type: EventDropped, Severity: mnguardv1.Severity_SEVERITY_ALERT,
		Message: msg, Attributes: attrs,
	}
}

// lossRange reads back the count and sequence range of a spool_full loss
// event.
func lossRange(e *mnguardv1.Event) (count, first, last uint64) {
	a := e.GetAttributes()
	count, _ = strconv.ParseUint(a["count"], 10, 64)
	first, _ = strconv.ParseUint(a["first_seq"], 10, 64)
	last, _ = strconv.ParseUint(a["last_seq"], 10, 64)
	return count, first, last
}

// decodeLoss decodes a stored record if it is a loss event. Dropped for
// room, its count goes into the new loss event (a write_failed one adds no
// sequence numbers to the range, having none).
func decodeLoss(v []byte) (*mnguardv1.Event, bool) {
	if !bytes.Contains(v, []byte(EventDropped)) {
		return nil, false
	}
	e := &mnguardv1.Event{}
	if proto.Unmarshal(v, e) != nil || e.GetType() != EventDropped {
		return nil, false
	}
	return e, true
}
