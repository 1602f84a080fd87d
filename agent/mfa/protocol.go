// Package mfa is the agent's local login gate: the unix socket that pam_mnguard.so asks
// whether a second factor is valid.
//
// The wire protocol is shared with the C module and must not change without it. Each
// message is a frame: a 4-byte big-endian length N (1 ≤ N ≤ MaxFrame), then N payload
// bytes. A connection carries one request and one response; the server closes it after
// responding.
//
// Request payload: u8 version (1), u8 type, then the type's fields, each as a u16
// big-endian length followed by that many bytes; nothing may follow the last field.
//
//	type 1, verify: user, service, code. Is code a valid second factor for user?
//	type 2, begin:  user, service. A login is starting: anything to show the user
//	                before the prompt?
//
// Response payload: u8 version (1), u8 result, then the message as a u16 big-endian
// length followed by that many bytes. To begin the agent answers Accepted (go on and
// prompt; the message, possibly empty, is shown first as information: an offline
// challenge when the collector cannot be reached) or refuses with another result
// (NotPermitted, BadRequest, Unavailable), and the module then does not prompt.
//
// pam_mnguard.so sends begin, shows its message, prompts, then sends verify, each on
// its own connection. Type 1 is unchanged since the first version of the protocol.
package mfa

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Protocol constants shared with pam_mnguard.so.
const (
	Version    = 1    // protocol version, first byte of every payload
	TypeVerify = 1    // request type: verify a second factor
	TypeBegin  = 2    // request type: a login begins; the answer carries a message to show
	MaxFrame   = 4096 // largest payload of a frame, in bytes
	MaxUser    = 256  // longest user name, in bytes
	MaxService = 64   // longest PAM service name, in bytes
	MaxCode    = 64   // longest code, in bytes
	MaxMessage = 512  // longest response message, in bytes
)

// Result is the agent's answer to a verification request.
type Result uint8

// Results, as sent on the wire.
const (
	Accepted     Result = 0 // the code is valid
	Rejected     Result = 1 // the code is wrong
	Locked       Result = 2 // the user is locked; the code was not checked
	Unavailable  Result = 3 // the agent cannot get an answer (collector unreachable or not verifying)
	BadRequest   Result = 4 // malformed frame or field
	NotPermitted Result = 5 // the peer may not ask for this user
)

var resultNames = [...]string{
	Accepted:     "accepted",
	Rejected:     "rejected",
	Locked:       "locked",
	Unavailable:  "unavailable",
	BadRequest:   "bad request",
	NotPermitted: "not permitted",
}

// String returns the result's name, as used in logs.
func (r Result) String() string {
	if r.Valid() {
		return resultNames[r]
	}
	return fmt.Sprintf("result(%d)", uint8(r))
}

// Valid reports whether r is one of the defined results.
func (r Result) Valid() bool { return int(r) < len(resultNames) }

// ErrMalformed is wrapped by every error about a malformed frame or payload. The errors
// never contain the code.
var ErrMalformed = errors.New("malformed message")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// Request is what the PAM module asks. Type TypeVerify asks whether Code is a valid
// second factor for User logging in to the PAM service Service; TypeBegin (no Code)
// says that such a login starts.
type Request struct {
	Type    uint8 // TypeVerify or TypeBegin
	User    string
	Service string
	Code    string // TypeVerify only
}

// Response is the agent's answer. Message is for the user and never contains the code.
type Response struct {
	Result  Result
	Message string
}

// Validate checks the request's fields against the protocol's rules. The error names
// the field but never repeats its content.
func (r Request) Validate() error {
	if r.Type != TypeVerify && r.Type != TypeBegin {
		return malformed("unknown request type %d", r.Type)
	}
	switch {
	case r.User == "":
		return malformed("user is empty")
	case len(r.User) > MaxUser:
		return malformed("user is %d bytes, more than %d", len(r.User), MaxUser)
	case !utf8.ValidString(r.User):
		return malformed("user is not valid UTF-8")
	case strings.ContainsFunc(r.User, unicode.IsControl):
		return malformed("user contains a control character")
	}
	if len(r.Service) > MaxService {
		return malformed("service is %d bytes, more than %d", len(r.Service), MaxService)
	}
	for i := range len(r.Service) {
		if !serviceByte(r.Service[i]) {
			return malformed("service contains a character outside [A-Za-z0-9._-]")
		}
	}
	if r.Type == TypeBegin {
		if r.Code != "" {
			return malformed("begin carries no code")
		}
		return nil
	}
	switch {
	case r.Code == "":
		return malformed("code is empty")
	case len(r.Code) > MaxCode:
		return malformed("code is %d bytes, more than %d", len(r.Code), MaxCode)
	}
	for i := range len(r.Code) {
		if !printable(r.Code[i]) {
			return malformed("code contains a non-printable character")
		}
	}
	return nil
}

func serviceByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

// printable reports whether c is printable ASCII, space included (C's isprint in the
// "C" locale).
func printable(c byte) bool { return 0x20 <= c && c <= 0x7e }

// EncodeRequest returns the payload of a request. It fails if a field breaks the
// protocol's rules.
func EncodeRequest(r Request) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	b := make([]byte, 0, 2+3*2+len(r.User)+len(r.Service)+len(r.Code))
	b = append(b, Version, r.Type)
	fields := []string{r.User, r.Service}
	if r.Type == TypeVerify {
		fields = append(fields, r.Code)
	}
	for _, f := range fields {
		b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
		b = append(b, f...)
	}
	return b, nil
}

// DecodeRequest parses and validates the payload of a request. Errors wrap
// ErrMalformed.
func DecodeRequest(p []byte) (Request, error) {
	if len(p) > MaxFrame {
		return Request{}, fmt.Errorf("decode request: %w", malformed("payload is %d bytes, more than %d", len(p), MaxFrame))
	}
	if len(p) < 2 {
		return Request{}, fmt.Errorf("decode request: %w", malformed("payload is %d bytes, too short for a header", len(p)))
	}
	if p[0] != Version {
		return Request{}, fmt.Errorf("decode request: %w", malformed("unsupported version %d", p[0]))
	}
	names := []string{"user", "service", "code"}
	switch p[1] {
	case TypeVerify:
	case TypeBegin:
		names = names[:2]
	default:
		return Request{}, fmt.Errorf("decode request: %w", malformed("unknown request type %d", p[1]))
	}
	rest := p[2:]
	var fields [3]string
	for i, name := range names {
		if len(rest) < 2 {
			return Request{}, fmt.Errorf("decode request: %w", malformed("%s: length is missing", name))
		}
		n := int(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
		if n > len(rest) {
			return Request{}, fmt.Errorf("decode request: %w", malformed("%s: length %d runs past the payload", name, n))
		}
		fields[i] = string(rest[:n])
		rest = rest[n:]
	}
	if len(rest) != 0 {
		return Request{}, fmt.Errorf("decode request: %w", malformed("%d bytes after the last field", len(rest)))
	}
	r := Request{Type: p[1], User: fields[0], Service: fields[1], Code: fields[2]}
	if err := r.Validate(); err != nil {
		return Request{}, fmt.Errorf("decode request: %w", err)
	}
	return r, nil
}

// EncodeResponse returns the payload of a response. It fails for an undefined result or
// a message that is not UTF-8 or longer than MaxMessage bytes.
func EncodeResponse(r Response) ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("encode response: %w", err)
	}
	b := make([]byte, 0, 4+len(r.Message))
	b = append(b, Version, byte(r.Result))
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Message)))
	return append(b, r.Message...), nil
}

// DecodeResponse parses and validates the payload of a response. Errors wrap
// ErrMalformed.
func DecodeResponse(p []byte) (Response, error) {
	if len(p) < 4 {
		return Response{}, fmt.Errorf("decode response: %w", malformed("payload is %d bytes, too short", len(p)))
	}
	if len(p) > 4+MaxMessage {
		return Response{}, fmt.Errorf("decode response: %w", malformed("payload is %d bytes, more than %d", len(p), 4+MaxMessage))
	}
	if p[0] != Version {
		return Response{}, fmt.Errorf("decode response: %w", malformed("unsupported version %d", p[0]))
	}
	n := int(binary.BigEndian.Uint16(p[2:]))
	if n != len(p)-4 {
		return Response{}, fmt.Errorf("decode response: %w", malformed("message length %d does not match the %d bytes that follow", n, len(p)-4))
	}
	r := Response{Result: Result(p[1]), Message: string(p[4:])}
	if err := r.validate(); err != nil {
		return Response{}, fmt.Errorf("decode response: %w", err)
	}
	return r, nil
}

func (r Response) validate() error {
	switch {
	case !r.Result.Valid():
		return malformed("undefined result %d", uint8(r.Result))
	case len(r.Message) > MaxMessage:
		return malformed("message is %d bytes, more than %d", len(r.Message), MaxMessage)
	case !utf8.ValidString(r.Message):
		return malformed("message is not valid UTF-8")
	}
	return nil
}

// ReadFrame reads one frame and returns its payload. A reader that ends before the
// first byte gives io.EOF; a length of 0 or more than MaxFrame, or a frame cut short,
// gives an error wrapping ErrMalformed.
func ReadFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		if err == io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("read frame: %w", malformed("truncated header (%d of 4 bytes)", n))
		}
		return nil, fmt.Errorf("read frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxFrame {
		return nil, fmt.Errorf("read frame: %w", malformed("length %d outside 1..%d", n, MaxFrame))
	}
	p := make([]byte, n)
	if got, err := io.ReadFull(r, p); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("read frame: %w", malformed("truncated payload (%d of %d bytes)", got, n))
		}
		return nil, fmt.Errorf("read frame payload: %w", err)
	}
	return p, nil
}

// WriteFrame writes payload as one frame, header and payload in a single write.
func WriteFrame(w io.Writer, payload []byte) error {
	if len(payload) == 0 || len(payload) > MaxFrame {
		return fmt.Errorf("write frame: payload is %d bytes, outside 1..%d", len(payload), MaxFrame)
	}
	b := make([]byte, 4, 4+len(payload))
	binary.BigEndian.PutUint32(b, uint32(len(payload)))
	b = append(b, payload...)
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}
