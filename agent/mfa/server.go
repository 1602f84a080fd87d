package mfa

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// DefaultPath is where the agent listens unless configured otherwise (mfa.socket).
const DefaultPath = "/run/mnguard/pam.sock"

// Defaults for the Server's zero fields.
const (
	DefaultTimeout        = 10 * time.Second
	DefaultRequestTimeout = time.Second
	DefaultMaxConns       = 32
	DefaultMaxConnsPerUID = 4
	DefaultMaxUserConns   = 32
)

// Verifier answers the requests that pass the server's checks; the agent implements it
// by asking the collector (and, when that cannot answer, with offline codes).
type Verifier interface {
	// Begin is called when a login of user on the PAM service starts, before the
	// prompt. It returns a message to show the user first, "" for none. An error
	// refuses the login (Unavailable). It must answer within about a second.
	Begin(ctx context.Context, user, service string) (string, error)
	// Verify answers whether code is a valid second factor for user on the PAM
	// service. An error means no answer could be had; the server then answers
	// Unavailable. The returned message is shown to the user and must not contain
	// the code.
	Verify(ctx context.Context, user, service, code string) (Result, string, error)
}

// Server is the agent's side of the PAM socket.
type Server struct {
	// Path of the unix socket; DefaultPath if empty.
	Path string
	// Verifier answers the requests that pass the checks. Required.
	Verifier Verifier
	// Logger receives one line per attempt (never the code); nothing is logged if nil.
	Logger *slog.Logger
	// Timeout bounds each phase of a connection: reading the request, the Verifier's
	// answer and writing the response. A client that connects and never writes is
	// dropped after it. Default DefaultTimeout.
	Timeout time.Duration
	// RequestTimeout is how long a peer other than root has for its request to
	// arrive (pam_mnguard.so writes it as soon as it is connected); at most Timeout.
	// Default DefaultRequestTimeout.
	RequestTimeout time.Duration
	// MaxConns is the number of connections from root (login, sshd, gdm: every
	// PAM service but a screen locker running as its user) served at once; further
	// ones wait for a slot. No other uid can take these slots. Default
	// DefaultMaxConns.
	MaxConns int
	// MaxConnsPerUID and MaxUserConns are the numbers of connections served at once
	// from one uid other than root and from all of them together. A connection
	// beyond either is closed at once, unanswered, so a local user flooding the
	// socket (mode 0666) holds no more than MaxConnsPerUID, each for at most
	// RequestTimeout unless it asks. Defaults DefaultMaxConnsPerUID and
	// DefaultMaxUserConns.
	MaxConnsPerUID, MaxUserConns int
	// NotPermitted, if set, is told of every request refused because the peer may not
	// ask for the user (req.Code is always empty).
	NotPermitted func(req Request, peerUID uint32)
	// OnListen, if set, is called once the socket accepts connections.
	OnListen func()
}

func (s *Server) path() string {
	if s.Path == "" {
		return DefaultPath
	}
	return s.Path
}

func (s *Server) timeout() time.Duration {
	if s.Timeout <= 0 {
		return DefaultTimeout
	}
	return s.Timeout
}

// requestTimeout is how long a peer with uid has for its request to arrive.
func (s *Server) requestTimeout(uid uint32) time.Duration {
	t := s.timeout()
	if uid == 0 {
		return t
	}
	if s.RequestTimeout > 0 {
		return min(s.RequestTimeout, t)
	}
	return min(DefaultRequestTimeout, t)
}

func orDefault(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Messages sent with the server's own answers.
const (
	msgUnavailable  = "cannot reach the collector"
	msgNotPermitted = "not permitted to verify this user"
	msgInternal     = "internal error in the agent"
)

// serveConn answers the one request on conn from a peer with the given uid.
func (s *Server) serveConn(ctx context.Context, conn net.Conn, uid uint32) {
	defer conn.Close()
	log := s.logger().With("peer_uid", uid)
	timeout := s.timeout()

	// Cancelling ctx unblocks a pending read; a response already decided is still
	// written under its own deadline.
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	reqTimeout := s.requestTimeout(uid)
	conn.SetReadDeadline(time.Now().Add(reqTimeout))
	p, err := ReadFrame(conn)
	stop()
	if err != nil {
		switch {
		case errors.Is(err, io.EOF):
			log.Debug("mfa: client closed without a request")
		case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
			log.Debug("mfa: connection dropped at shutdown")
		case errors.Is(err, os.ErrDeadlineExceeded):
			log.Warn("mfa: client sent no request in time, dropped", "timeout", reqTimeout)
		case errors.Is(err, ErrMalformed):
			log.Warn("mfa: bad request", "err", err)
			s.respond(conn, log, Response{Result: BadRequest, Message: err.Error()})
		default:
			log.Warn("mfa: read request", "err", err)
		}
		return
	}

	req, err := DecodeRequest(p)
	if err != nil {
		log.Warn("mfa: bad request", "err", err)
		s.respond(conn, log, Response{Result: BadRequest, Message: err.Error()})
		return
	}
	log = log.With("user", req.User, "service", req.Service)

	if !permitted(uid, req.User) {
		if req.Type == TypeBegin {
			log.Info("mfa: login begins", "result", NotPermitted)
		} else {
			log.Info("mfa: verification attempt", "result", NotPermitted)
		}
		s.respond(conn, log, Response{Result: NotPermitted, Message: msgNotPermitted})
		if s.NotPermitted != nil {
			s.NotPermitted(Request{Type: req.Type, User: req.User, Service: req.Service}, uid)
		}
		return
	}

	if req.Type == TypeBegin {
		bctx, cancel := context.WithTimeout(ctx, timeout)
		msg, err := s.Verifier.Begin(bctx, req.User, req.Service)
		cancel()
		res := Accepted
		if err != nil {
			log.Warn("mfa: login begins", "result", Unavailable, "err", err)
			res, msg = Unavailable, msgInternal
		} else {
			log.Debug("mfa: login begins", "result", res, "message", msg != "")
		}
		s.respond(conn, log, Response{Result: res, Message: msg})
		return
	}

	vctx, cancel := context.WithTimeout(ctx, timeout)
	res, msg, err := s.Verifier.Verify(vctx, req.User, req.Service, req.Code)
	cancel()
	switch {
	case err != nil:
		log.Info("mfa: verification attempt", "result", Unavailable, "err", err)
		res, msg = Unavailable, msgUnavailable
	case !res.Valid():
		log.Error("mfa: verifier gave an undefined result", "verifier_result", uint8(res))
		res, msg = Unavailable, msgInternal
		log.Info("mfa: verification attempt", "result", res)
	default:
		log.Info("mfa: verification attempt", "result", res)
	}
	s.respond(conn, log, Response{Result: res, Message: cleanMessage(msg, req.Code)})
}

func (s *Server) respond(conn net.Conn, log *slog.Logger, r Response) {
	r.Message = cleanMessage(r.Message, "")
	p, err := EncodeResponse(r)
	if err == nil {
		conn.SetWriteDeadline(time.Now().Add(s.timeout()))
		err = WriteFrame(conn, p)
	}
	if err != nil {
		log.Warn("mfa: write response", "err", err)
	}
}

// permitted reports whether a peer with uid may ask about name: root may ask for
// anyone, any other uid only for the user it is.
func permitted(uid uint32, name string) bool {
	if uid == 0 {
		return true
	}
	u, err := user.Lookup(name)
	return err == nil && u.Uid == strconv.FormatUint(uint64(uid), 10)
}

// cleanMessage makes msg safe to send: valid UTF-8, no control characters (it ends up
// on a terminal), at most MaxMessage bytes, and never containing the code.
func cleanMessage(msg, code string) string {
	if code != "" && strings.Contains(msg, code) {
		return ""
	}
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	msg = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, msg)
	for len(msg) > MaxMessage {
		_, n := utf8.DecodeLastRuneInString(msg)
		msg = msg[:len(msg)-n]
	}
	return msg
}
