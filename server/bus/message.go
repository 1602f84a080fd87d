package bus

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Kind says what changed. A message names only what changed, never the new
// state: the replica that receives it reads the state in force from the
// database, so a forged, stale or reordered message can at most cause a
// needless read.
type Kind string

// Kinds of messages.
const (
	// Exemptions: the terminal's exemptions changed (issued or revoked).
	Exemptions Kind = "exemptions"
	// Policy: the network policy in force changed.
	Policy Kind = "policy"
	// Revoked: the terminal was revoked; its streams end.
	Revoked Kind = "revoked"
	// Retired: certificates of the terminal were replaced by a renewed one;
	// the streams opened with them end.
	Retired Kind = "retired"
	// Sent answers an Exemptions message with a Seq: a stream of the
	// terminal on the answering replica has sent the set in force after
	// the change. To names the replica that asked.
	Sent Kind = "sent"
)

// Channel is the PostgreSQL notification channel of the pushes.
const Channel = "mnguard_push"

// Limits of a message. PostgreSQL refuses a payload of 8000 bytes or more.
const (
	maxPayload  = 7900
	maxOrigin   = 64
	maxTerminal = 64
	maxSerials  = 32
	maxSerial   = 64
)

// Message is one change announced to the other replicas.
type Message struct {
	// Origin is the replica that made the change (Postgres.Origin); a
	// replica ignores its own messages, as its hub has pushed already.
	Origin string `json:"o"`
	Kind   Kind   `json:"k"`
	// Terminal is the terminal the change is about; empty for Policy.
	Terminal string `json:"t,omitempty"`
	// Serials are the retired certificates' serial numbers (hex), for
	// Retired only.
	Serials []string `json:"s,omitempty"`
	// Seq, on Exemptions, asks the replicas with a stream of the terminal
	// to answer Sent with it once one of them has sent the new set; on
	// Sent it is the Seq answered.
	Seq uint64 `json:"n,omitempty"`
	// To is the replica a Sent answers.
	To string `json:"to,omitempty"`
}

// key identifies the messages that one delivery can stand for: as a
// message carries no state, two pending messages with the same key are one.
func (m Message) key() string {
	return string(m.Kind) + "\x00" + m.Terminal + "\x00" + strings.Join(m.Serials, ",") + "\x00" + m.To + "\x00" + strconv.FormatUint(m.Seq, 10)
}

// Encode returns the notification payload of m, after checking it.
func (m Message) Encode() (string, error) {
	if err := m.Validate(); err != nil {
		return "", err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encode bus message: %w", err)
	}
	if len(b) > maxPayload {
		return "", fmt.Errorf("bus message of %d bytes: at most %d fit a notification", len(b), maxPayload)
	}
	return string(b), nil
}

// Decode parses and checks a notification payload.
func Decode(payload string) (Message, error) {
	if len(payload) > maxPayload {
		return Message{}, fmt.Errorf("bus message of %d bytes: at most %d", len(payload), maxPayload)
	}
	var m Message
	d := json.NewDecoder(strings.NewReader(payload))
	d.DisallowUnknownFields()
	if err := d.Decode(&m); err != nil {
		return Message{}, fmt.Errorf("decode bus message: %w", err)
	}
	if d.More() {
		return Message{}, errors.New("decode bus message: trailing data after the message")
	}
	if err := m.Validate(); err != nil {
		return Message{}, err
	}
	return m, nil
}

// Validate checks the fields of m for its kind.
func (m Message) Validate() error {
	if err := checkToken("origin", m.Origin, maxOrigin, false); err != nil {
		return err
	}
	switch m.Kind {
	case Exemptions, Revoked, Retired, Sent:
		if err := checkToken("terminal", m.Terminal, maxTerminal, false); err != nil {
			return err
		}
	case Policy:
		if m.Terminal != "" {
			return errors.New("bus message: a policy message names no terminal")
		}
	default:
		return fmt.Errorf("bus message: unknown kind %q (want exemptions, policy, revoked, retired or sent)", truncate(string(m.Kind)))
	}
	switch {
	case m.Kind == Sent && (m.Seq == 0 || m.To == ""):
		return errors.New("bus message: sent needs the seq answered and the replica it goes to")
	case m.Kind != Sent && m.To != "":
		return fmt.Errorf("bus message: only sent goes to one replica, not %s", m.Kind)
	case m.Kind != Sent && m.Kind != Exemptions && m.Seq != 0:
		return fmt.Errorf("bus message: a seq goes with exemptions or sent, not %s", m.Kind)
	}
	if m.To != "" {
		if err := checkToken("to", m.To, maxOrigin, false); err != nil {
			return err
		}
	}
	if m.Kind != Retired {
		if len(m.Serials) > 0 {
			return fmt.Errorf("bus message: serials only go with %s, not %s", Retired, m.Kind)
		}
		return nil
	}
	if len(m.Serials) == 0 || len(m.Serials) > maxSerials {
		return fmt.Errorf("bus message: %d serials: want 1 to %d", len(m.Serials), maxSerials)
	}
	for _, s := range m.Serials {
		if err := checkToken("serial", s, maxSerial, true); err != nil {
			return err
		}
	}
	return nil
}

// checkToken checks that v is 1 to max characters of [0-9a-zA-Z-], or
// only hex digits when hex is set.
func checkToken(what, v string, max int, hex bool) error {
	if v == "" || len(v) > max {
		return fmt.Errorf("bus message: %s of %d bytes: want 1 to %d", what, len(v), max)
	}
	for _, c := range v {
		ok := c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
		if !hex {
			ok = ok || c >= 'g' && c <= 'z' || c >= 'G' && c <= 'Z' || c == '-'
		}
		if !ok {
			return fmt.Errorf("bus message: %s %q: unexpected character %q", what, truncate(v), c)
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
