package exemptions

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/mnguard/mnguard/internal/exemption"
)

// The control socket: 'mnguard-agent exemption' asks the running agent over
// a local socket (ControlAddress): on Linux a unix socket in the state
// directory (SocketName, mode 0600; the peer must be root or the agent's
// own user, checked with SO_PEERCRED), on Windows the named pipe
// ControlPipe, which only SYSTEM and the Administrators may open.
// A connection carries one request and one response, each a frame: a 4-byte
// big-endian length N, then N bytes of JSON (requests at most MaxRequest
// bytes, responses at most MaxResponse).
//
//	{"op": "challenge", "device": "0781:5581:SERIAL", "duration_seconds": 3600}
//	  → {"challenge": {"challenge": "ABCDE-FGHJK", "device": "…", "duration_seconds": 3600, "expires_at": "…"}}
//	{"op": "enter", "code": "ABCDE-FGHJK"}
//	  → {"exemption": {"id": "offline-…", "device": "…", "state": "applied", "devices": ["sdb"], …}}
//	{"op": "list"}
//	  → {"exemptions": [{…}, …]}
//
// A refused request answers {"error": "…"}.

// Control protocol limits.
const (
	MaxRequest  = 4 << 10
	MaxResponse = 1 << 20
	// controlRequestTimeout is how long a client has for its request to
	// arrive (the CLI writes it as soon as it is connected): a client that
	// connects and says nothing holds a slot no longer.
	controlRequestTimeout = 2 * time.Second
	// controlTimeout bounds writing the answer, and the CLI's whole call.
	controlTimeout = 10 * time.Second
)

// Operations of the control socket.
const (
	OpChallenge = "challenge"
	OpEnter     = "enter"
	OpList      = "list"
)

// Request is a control request.
type Request struct {
	Op              string `json:"op"`
	Device          string `json:"device,omitempty"`
	DurationSeconds uint32 `json:"duration_seconds,omitempty"`
	Code            string `json:"code,omitempty"`
}

// Response is the agent's answer.
type Response struct {
	Error      string         `json:"error,omitempty"`
	Challenge  *ChallengeInfo `json:"challenge,omitempty"`
	Exemption  *Info          `json:"exemption,omitempty"`
	Exemptions []Info         `json:"exemptions,omitempty"`
}

// DecodeRequest parses and checks a request payload.
func DecodeRequest(p []byte) (Request, error) {
	var r Request
	if len(p) > MaxRequest {
		return r, fmt.Errorf("request of %d bytes, at most %d", len(p), MaxRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("request: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Request{}, errors.New("request: data after the object")
	}
	switch r.Op {
	case OpChallenge:
		if _, err := exemption.ParseDevice(r.Device); err != nil {
			return Request{}, err
		}
		if err := exemption.OfflineDuration(time.Duration(r.DurationSeconds) * time.Second); err != nil {
			return Request{}, err
		}
		if r.Code != "" {
			return Request{}, errors.New("request: challenge takes no code")
		}
	case OpEnter:
		if _, err := exemption.Normalize(r.Code); err != nil {
			return Request{}, fmt.Errorf("code: %w", err)
		}
		if r.Device != "" || r.DurationSeconds != 0 {
			return Request{}, errors.New("request: enter takes only a code")
		}
	case OpList:
		if r.Device != "" || r.DurationSeconds != 0 || r.Code != "" {
			return Request{}, errors.New("request: list takes no arguments")
		}
	default:
		return Request{}, fmt.Errorf("request: unknown op %q", clip(r.Op))
	}
	return r, nil
}

func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

// Handle answers one control request.
func (m *Manager) Handle(ctx context.Context, r Request) Response {
	switch r.Op {
	case OpChallenge:
		c, err := m.Challenge(r.Device, time.Duration(r.DurationSeconds)*time.Second)
		if err != nil {
			return Response{Error: err.Error()}
		}
		return Response{Challenge: &c}
	case OpEnter:
		i, err := m.EnterAndApply(ctx, r.Code)
		if err != nil {
			return Response{Error: err.Error()}
		}
		return Response{Exemption: &i}
	case OpList:
		return Response{Exemptions: m.List()}
	}
	return Response{Error: fmt.Sprintf("unknown op %q", clip(r.Op))}
}

func writeFrame(w io.Writer, p []byte) error {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(p)))
	if _, err := w.Write(append(n[:], p...)); err != nil {
		return err
	}
	return nil
}

func readFrame(r io.Reader, limit int) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size == 0 || size > uint32(limit) {
		return nil, fmt.Errorf("frame of %d bytes, want 1 to %d", size, limit)
	}
	p := make([]byte, size)
	if _, err := io.ReadFull(r, p); err != nil {
		return nil, err
	}
	return p, nil
}

// serveConn answers the one request on conn.
func serveConn(ctx context.Context, conn net.Conn, h func(context.Context, Request) Response) error {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	conn.SetReadDeadline(time.Now().Add(controlRequestTimeout))
	p, err := readFrame(conn, MaxRequest)
	stop()
	if err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	var resp Response
	req, err := DecodeRequest(p)
	if err != nil {
		resp.Error = err.Error()
	} else {
		resp = h(ctx, req)
	}
	out, err := json.Marshal(resp)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	if len(out) > MaxResponse {
		out, _ = json.Marshal(Response{Error: "response too large"})
	}
	conn.SetWriteDeadline(time.Now().Add(controlTimeout))
	return writeFrame(conn, out)
}

// ErrNotRunning means nothing answers on the control socket.
var ErrNotRunning = errors.New("the agent is not running")

// Call sends one request to the agent's control socket at path and returns
// its answer; a refusal is returned as an error with the agent's text.
func Call(ctx context.Context, path string, req Request) (Response, error) {
	p, err := json.Marshal(req)
	if err != nil {
		return Response{}, err
	}
	conn, err := dialControl(ctx, path)
	if err != nil {
		return Response{}, fmt.Errorf("%w (%v)", ErrNotRunning, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * controlTimeout))
	if err := writeFrame(conn, p); err != nil {
		return Response{}, fmt.Errorf("control socket: %w", err)
	}
	out, err := readFrame(conn, MaxResponse)
	if err != nil {
		return Response{}, fmt.Errorf("control socket: no answer: %w", err)
	}
	var resp Response
	if err := json.Unmarshal(out, &resp); err != nil {
		return Response{}, fmt.Errorf("control socket: %w", err)
	}
	if resp.Error != "" {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}
