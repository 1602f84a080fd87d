package exemptions

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mnguard/mnguard/internal/exemption"
	"github.com/mnguard/mnguard/internal/pki"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// The persisted file, FileName (JSON, 0600, replaced atomically):
//
//	{
//	  "version": 1,
//	  "last_seen": "2026-11-25T10:20:00Z",      // the wall clock at the last save
//	  "exemptions": [{
//	    "id": "…", "source": "server"|"offline", "device": "0781:5581:SERIAL",
//	    "allow_no_serial": false,
//	    "not_before": "…", "not_after": "…", "duration_seconds": 3600,
//	    "received_at": "…",                       // wall clock at receipt
//	    "consumed_ms": 1234,                      // duration used up since receipt
//	    "issuer": "…", "reason": "…", "ticket": "…",
//	    "token": "base64",                        // server: the SignedExemption (protobuf), verified again at load
//	    "challenge": "ABCDE12345", "mac": "base64", // offline: HMAC-SHA256 under the offline key
//	    "ended_at": "…", "end_reason": "expired", "end_detail": "…"
//	  }],
//	  "challenges": [{"challenge": "ABCDE12345", "device": "…", "duration_seconds": 3600,
//	                  "created_at": "…", "expires_at": "…", "used_at": "…"}],
//	  "wrong_codes": 0,                           // wrong response codes in a row
//	  "locked_until": "…"                         // code entry refused until then
//	}

const (
	fileVersion  = 1
	maxFileBytes = 1 << 20
	maxText      = 512
	macPurpose   = "mnguard offline exemption record v1"
)

type file struct {
	Version  int       `json:"version"`
	LastSeen time.Time `json:"last_seen"`
	// BootID and BootUptime are the boot and the time since boot (a clock
	// the wall clock's setting does not move) at LastSeen: after an agent
	// restart within the same boot they measure the downtime.
	BootID      string       `json:"boot_id,omitempty"`
	BootUptime  int64        `json:"boot_uptime_ns,omitempty"`
	Exemptions  []*record    `json:"exemptions"`
	Challenges  []*challenge `json:"challenges"`
	WrongCodes  int          `json:"wrong_codes"`
	LockedUntil time.Time    `json:"locked_until,omitzero"`
}

// record is one exemption held, in force or ended.
type record struct {
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Device          string    `json:"device"`
	AllowNoSerial   bool      `json:"allow_no_serial,omitempty"`
	NotBefore       time.Time `json:"not_before"`
	NotAfter        time.Time `json:"not_after"`
	DurationSeconds uint32    `json:"duration_seconds"`
	ReceivedAt      time.Time `json:"received_at"`
	ConsumedMS      int64     `json:"consumed_ms"`
	Issuer          string    `json:"issuer,omitempty"`
	Reason          string    `json:"reason,omitempty"`
	Ticket          string    `json:"ticket,omitempty"`
	Token           []byte    `json:"token,omitempty"`
	Challenge       string    `json:"challenge,omitempty"`
	MAC             []byte    `json:"mac,omitempty"`
	EndedAt         time.Time `json:"ended_at,omitzero"`
	EndReason       string    `json:"end_reason,omitempty"`
	EndDetail       string    `json:"end_detail,omitempty"`

	consumed time.Duration
	dev      *mnguardv1.DeviceIdentity
}

// challenge is one offline challenge shown and not yet expired.
type challenge struct {
	Text            string    `json:"challenge"`
	Device          string    `json:"device"`
	DurationSeconds uint32    `json:"duration_seconds"`
	CreatedAt       time.Time `json:"created_at"`
	ExpiresAt       time.Time `json:"expires_at"`
	UsedAt          time.Time `json:"used_at,omitzero"`

	dev *mnguardv1.DeviceIdentity
}

func (c *challenge) expired(now time.Time) bool {
	// A clock earlier than the challenge's creation is not trusted either.
	return !now.Before(c.ExpiresAt) || now.Before(c.CreatedAt.Add(-time.Minute))
}

func (c *challenge) duration() time.Duration { return time.Duration(c.DurationSeconds) * time.Second }

func (r *record) ended() bool { return !r.EndedAt.IsZero() }

func (r *record) duration() time.Duration { return time.Duration(r.DurationSeconds) * time.Second }

// fill sets r's fields from a verified token's exemption.
func (r *record) fill(e *mnguardv1.Exemption) {
	r.ID, r.Device, r.dev = e.GetId(), exemption.FormatDevice(e.GetDevice()), e.GetDevice()
	r.AllowNoSerial = e.GetAllowNoSerial()
	r.NotBefore, r.NotAfter = e.GetNotBefore().AsTime(), e.GetNotAfter().AsTime()
	r.DurationSeconds = e.GetDurationSeconds()
	r.Issuer, r.Reason, r.Ticket = e.GetIssuer(), e.GetReason(), e.GetTicket()
}

// over says why r is over at now ("" while in force).
func (r *record) over(now time.Time) (reason, detail string) {
	switch {
	case !now.Before(r.NotAfter):
		return EndExpired, "its end " + r.NotAfter.Format(time.RFC3339) + " passed"
	case r.consumed >= r.duration():
		return EndDurationUsed, fmt.Sprintf("%s since it was received at %s used up", r.duration(), r.ReceivedAt.Format(time.RFC3339))
	}
	return "", ""
}

// inForce says whether r makes its device writable at now, with consumed
// used up.
func (r *record) inForce(now time.Time, consumed time.Duration) bool {
	return !r.ended() && now.Before(r.NotAfter) && consumed < r.duration() && r.valid(now)
}

// valid says whether r's not-before is reached (with the clock skew a token
// is allowed).
func (r *record) valid(now time.Time) bool {
	return !now.Add(exemption.ClockSkew).Before(r.NotBefore)
}

// left is the time until r ends at now.
func (r *record) left(now time.Time) time.Duration {
	return max(min(r.NotAfter.Sub(now), r.duration()-r.consumed), 0)
}

func (r *record) matches(vendorID, productID, serial string) bool {
	return r.dev != nil && strings.EqualFold(r.dev.GetVendorId(), vendorID) && strings.EqualFold(r.dev.GetProductId(), productID) &&
		r.dev.GetSerial() == serial
}

func (r *record) attrs() map[string]string {
	return map[string]string{
		"id": r.ID, "device": r.Device, "source": r.Source,
		"not_after": r.NotAfter.UTC().Format(time.RFC3339), "duration": r.duration().String(),
	}
}

// info is r's state at now against the devices attached.
func (r *record) info(now time.Time, consumed time.Duration, devs []*mnguardv1.RemovableDevice) Info {
	i := Info{ID: r.ID, Device: r.Device, Source: r.Source, NotAfter: r.NotAfter, Ticket: r.Ticket, Reason: r.Reason}
	live := r.inForce(now, consumed)
	// The media side's device states: "exempted" is writable under an
	// exemption, "ending" on its way back to read-only, "writable" failed
	// enforcement.
	var writable, other []string
	for _, d := range devs {
		if !r.matches(d.GetVendorId(), d.GetProductId(), d.GetSerial()) {
			continue
		}
		switch st := d.GetState(); {
		case st == "exempted" || (!live && (st == "writable" || st == "ending")):
			writable = append(writable, d.GetName())
		default:
			other = append(other, d.GetName()+" "+st)
		}
	}
	if live {
		left := max(min(r.NotAfter.Sub(now), r.duration()-consumed), 0)
		i.RemainingSeconds = uint32((left + time.Second - 1) / time.Second)
	}
	switch {
	case live && len(writable) > 0:
		i.State, i.Devices = StateApplied, writable
	case live:
		i.State = StateWaiting
		switch {
		case len(other) > 0:
			i.Detail = "attached, not writable yet: " + strings.Join(other, ", ")
		default:
			i.Detail = "no matching device attached"
		}
	case !r.valid(now) && !r.ended():
		i.State, i.Detail = StateWaiting, "not valid before "+r.NotBefore.Format(time.RFC3339)
	case len(writable) > 0 || !r.ended():
		// Over (or over by the clock, and the next tick ends it): the
		// device is being made read-only.
		i.State, i.Devices = StateEnding, writable
		i.Detail = "being made read-only"
		if r.EndReason != "" {
			i.Detail = "ended (" + r.EndReason + "); being made read-only"
		}
	default:
		i.State = StateEnded
		i.Detail = r.EndReason
		if r.EndDetail != "" {
			i.Detail += ": " + r.EndDetail
		}
	}
	return i
}

// mac is the HMAC of an offline record's fixed fields under the offline
// key, so that an edited file cannot lengthen or move it.
func (r *record) mac(key []byte, terminalID string) []byte {
	h := hmac.New(sha256.New, key)
	for _, f := range []string{macPurpose, terminalID, r.ID, r.Source, r.Device, r.Challenge,
		r.NotBefore.UTC().Format(time.RFC3339Nano), r.NotAfter.UTC().Format(time.RFC3339Nano), r.ReceivedAt.UTC().Format(time.RFC3339Nano)} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		h.Write(n[:])
		h.Write([]byte(f))
	}
	var d [4]byte
	binary.BigEndian.PutUint32(d[:], r.DurationSeconds)
	h.Write(d[:])
	return h.Sum(nil)
}

func (r *record) macOK(key []byte, terminalID string) bool {
	return len(key) > 0 && hmac.Equal(r.MAC, r.mac(key, terminalID))
}

func (f *file) marshal() ([]byte, error) {
	for _, r := range f.Exemptions {
		r.ConsumedMS = r.consumed.Milliseconds()
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("exemptions: %w", err)
	}
	return append(b, '\n'), nil
}

func writeFile(path string, data []byte) error {
	if err := pki.WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("exemptions: %w", err)
	}
	return nil
}

// parseFile decodes and checks the persisted file.
func parseFile(data []byte) (*file, error) {
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("%d bytes, more than %d", len(data), maxFileBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	f := &file{}
	if err := dec.Decode(f); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("decode: data after the object")
	}
	if f.Version != fileVersion {
		return nil, fmt.Errorf("version %d, want %d", f.Version, fileVersion)
	}
	if len(f.Exemptions) > MaxExemptions {
		return nil, fmt.Errorf("%d exemptions, at most %d", len(f.Exemptions), MaxExemptions)
	}
	if len(f.Challenges) > MaxPending {
		return nil, fmt.Errorf("%d challenges, at most %d", len(f.Challenges), MaxPending)
	}
	if f.WrongCodes < 0 || f.WrongCodes > MaxWrongCodes {
		return nil, fmt.Errorf("wrong_codes %d outside 0..%d", f.WrongCodes, MaxWrongCodes)
	}
	seen := make(map[string]bool)
	for i, r := range f.Exemptions {
		if r == nil {
			return nil, fmt.Errorf("exemption %d: null", i)
		}
		if err := r.check(); err != nil {
			return nil, fmt.Errorf("exemption %d: %w", i, err)
		}
		if seen[r.ID] {
			return nil, fmt.Errorf("exemption %d: id %q twice", i, r.ID)
		}
		seen[r.ID] = true
	}
	for i, c := range f.Challenges {
		if c == nil {
			return nil, fmt.Errorf("challenge %d: null", i)
		}
		if err := c.check(); err != nil {
			return nil, fmt.Errorf("challenge %d: %w", i, err)
		}
	}
	return f, nil
}

func (r *record) check() error {
	switch {
	case r.ID == "" || len(r.ID) > 64:
		return errors.New("id missing or longer than 64 bytes")
	case r.Source != SourceServer && r.Source != SourceOffline:
		return fmt.Errorf("source %q is not server or offline", r.Source)
	case r.DurationSeconds == 0 || time.Duration(r.DurationSeconds)*time.Second > exemption.MaxDuration:
		return fmt.Errorf("duration %ds outside 1s..%s", r.DurationSeconds, exemption.MaxDuration)
	case r.ConsumedMS < 0:
		return errors.New("consumed_ms negative")
	case !r.NotAfter.After(r.NotBefore):
		return errors.New("not_after is not after not_before")
	case len(r.Issuer) > maxText || len(r.Reason) > maxText || len(r.Ticket) > maxText || len(r.EndDetail) > 4*maxText || len(r.EndReason) > 64:
		return errors.New("text field too long")
	case len(r.Token) > 16<<10:
		return errors.New("token too long")
	case r.Source == SourceServer && len(r.Token) == 0:
		return errors.New("server exemption without its token")
	case r.Source == SourceOffline && len(r.MAC) != sha256.Size:
		return errors.New("offline exemption without its MAC")
	}
	d, err := exemption.ParseDevice(r.Device)
	if err != nil {
		return err
	}
	if d.GetSerial() == "" && !r.AllowNoSerial {
		return errors.New("device without a serial number and no override")
	}
	r.dev = d
	r.consumed = time.Duration(min(r.ConsumedMS, int64(exemption.MaxDuration/time.Millisecond))) * time.Millisecond
	return nil
}

func (c *challenge) check() error {
	p, err := exemption.ParseChallenge(c.Text)
	if err != nil {
		return err
	}
	if p.Text != c.Text {
		return errors.New("challenge not normalized")
	}
	d, err := exemption.ParseDevice(c.Device)
	if err != nil {
		return err
	}
	if exemption.DeviceTag(d) != p.Tag || p.Duration != c.duration() {
		return errors.New("challenge does not match its device and duration")
	}
	if !c.ExpiresAt.After(c.CreatedAt) || c.ExpiresAt.Sub(c.CreatedAt) > ChallengeTTL {
		return errors.New("challenge expiry outside its lifetime")
	}
	c.dev = d
	return nil
}

// ReadFile reads the exemptions persisted in a state directory's file, for
// 'mnguard-agent exemption list' while the agent is not running. States
// are judged at now without devices (no device is writable without the
// agent).
func ReadFile(path string, now time.Time) ([]Info, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := parseFile(data)
	if err != nil {
		return nil, fmt.Errorf("exemptions: %s: %w", path, err)
	}
	out := make([]Info, 0, len(f.Exemptions))
	for _, r := range f.Exemptions {
		if !r.ended() {
			r.consumed += max(now.Sub(f.LastSeen), 0)
			if now.Before(f.LastSeen) {
				r.EndedAt, r.EndReason = now, EndClockBack
			} else if why, detail := r.over(now); why != "" {
				r.EndedAt, r.EndReason, r.EndDetail = now, why, detail
			}
		}
		out = append(out, r.info(now, r.consumed, nil))
	}
	return out, nil
}
