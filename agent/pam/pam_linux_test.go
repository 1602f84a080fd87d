//go:build linux

package pam

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Protocol constants shared with pam_mnguard.c.
const (
	protoVersion   = 1
	typeVerify     = 1
	typeBegin      = 2
	maxFrame       = 4096
	resAccepted    = 0
	resRejected    = 1
	resLocked      = 2
	resUnavailable = 3
	resBadRequest  = 4
	resNotPermit   = 5
)

// pam_strerror texts as pamtester prints them.
const (
	outSuccess = "pamtester: successfully authenticated"
	outAuthErr = "Authentication failure"
	outUnavail = "Authentication service cannot retrieve authentication info" // Linux-PAM's PAM_AUTHINFO_UNAVAIL
	outMaxTry  = "Have exhausted maximum number of retries for service"
	outPerm    = "Permission denied"
)

// need fails under CI=true and skips otherwise when a prerequisite is missing.
func need(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: not skipping; make deps installs them, as root)", msg)
	}
	t.Skip(msg)
}

func buildModule(t *testing.T) string {
	t.Helper()
	need(t, os.Geteuid() == 0, "PAM tests need root (they write /etc/pam.d and chown sockets)")
	cc, err := exec.LookPath("cc")
	need(t, err == nil, "cc not found: apt-get install gcc")
	_, err = os.Stat("/usr/include/security/pam_modules.h")
	need(t, err == nil, "libpam headers not found: apt-get install libpam0g-dev")
	_, err = exec.LookPath("pamtester")
	need(t, err == nil, "pamtester not found: apt-get install pamtester")

	so := filepath.Join(t.TempDir(), "pam_mnguard.so")
	cmd := exec.Command(cc, "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-fPIC", "-O2",
		"-D_FORTIFY_SOURCE=2", "-fstack-protector-strong", "-shared",
		"-o", so, "pam_mnguard.c", "-lpam")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("compiling pam_mnguard.c: %v\n%s", err, out)
	}
	return so
}

// syslogSink collects what the module logs when no syslog daemon owns
// /dev/log (containers, CI). On a machine with a real /dev/log it captures
// nothing and says so.
type syslogSink struct {
	mu   sync.Mutex
	msgs []string
	ok   bool
}

func startSyslog(t *testing.T) *syslogSink {
	s := &syslogSink{}
	if _, err := os.Lstat("/dev/log"); err == nil {
		t.Log("/dev/log exists: syslog output is not captured, only pamtester's output is checked")
		return s
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: "/dev/log", Net: "unixgram"})
	if err != nil {
		t.Logf("cannot listen on /dev/log: %v", err)
		return s
	}
	s.ok = true
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, string(buf[:n]))
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
		os.Remove("/dev/log")
	})
	return s
}

func (s *syslogSink) mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

func (s *syslogSink) since(mark int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.msgs[mark:], "\n")
}

// request is what the scripted peer received.
type request struct {
	version, typ        byte
	user, service, code string
}

// script says how the scripted peer answers one request type: with
// answer(req) (raw frame bytes) after delay, or never when hang.
type script struct {
	answer func(request) []byte
	delay  time.Duration
	hang   bool
}

// peer is a scripted stand-in for the agent's socket: it answers begin and
// verify requests as their scripts say.
type peer struct {
	ln            net.Listener
	begin, verify script

	mu    sync.Mutex
	conns int
	reqs  []request
	errs  []error
	wg    sync.WaitGroup
	close chan struct{}
}

func startPeer(t *testing.T, path string, begin, verify script) *peer {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 0, 0); err != nil {
		t.Fatal(err)
	}
	p := &peer{ln: ln, begin: begin, verify: verify, close: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer c.Close()
				p.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		close(p.close)
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *peer) serve(c net.Conn) {
	p.mu.Lock()
	p.conns++
	p.mu.Unlock()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	req, err := readRequest(c)
	p.mu.Lock()
	if err != nil {
		p.errs = append(p.errs, err)
	} else {
		p.reqs = append(p.reqs, req)
	}
	p.mu.Unlock()
	if err != nil {
		return
	}
	sc := p.verify
	if req.typ == typeBegin {
		sc = p.begin
	}
	if sc.hang {
		<-p.close
		return
	}
	select {
	case <-time.After(sc.delay):
	case <-p.close:
		return
	}
	_, _ = c.Write(sc.answer(req))
}

func readRequest(r io.Reader) (request, error) {
	var req request
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return req, fmt.Errorf("frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 1 || n > maxFrame {
		return req, fmt.Errorf("frame length %d", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return req, fmt.Errorf("frame payload: %w", err)
	}
	if len(b) < 2 {
		return req, errors.New("short payload")
	}
	req.version, req.typ = b[0], b[1]
	b = b[2:]
	field := func() (string, error) {
		if len(b) < 2 {
			return "", errors.New("short field length")
		}
		l := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+l {
			return "", errors.New("short field")
		}
		s := string(b[2 : 2+l])
		b = b[2+l:]
		return s, nil
	}
	var err error
	if req.user, err = field(); err != nil {
		return req, err
	}
	if req.service, err = field(); err != nil {
		return req, err
	}
	if req.typ == typeVerify {
		if req.code, err = field(); err != nil {
			return req, err
		}
	}
	if len(b) != 0 {
		return req, fmt.Errorf("%d trailing bytes", len(b))
	}
	return req, nil
}

func frame(payload []byte) []byte {
	out := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	return append(out, payload...)
}

func response(result byte, msg string) []byte {
	p := []byte{protoVersion, result}
	p = binary.BigEndian.AppendUint16(p, uint16(len(msg)))
	return frame(append(p, msg...))
}

func answer(result byte, msg string) func(request) []byte {
	return func(request) []byte { return response(result, msg) }
}

func raw(b []byte) func(request) []byte { return func(request) []byte { return b } }

type pamCase struct {
	name      string
	code      string        // typed at the prompt
	typeAfter time.Duration // the user types the code this long after the start
	begin     script        // the peer's answer to begin (default: accepted, no message)
	answer    func(request) []byte
	hang      bool          // the peer reads the verify request and never answers
	delay     time.Duration // the peer answers the verify request after this long
	noSocket  bool          // agent down
	owner     int           // socket owner uid when not root
	dirMode   os.FileMode   // socket directory mode when not 0700
	args      string        // extra module arguments
	wantOK    bool          // pamtester succeeds
	want      []string      // substrings of pamtester's output
	wantNot   []string      // substrings pamtester's output must not have
	wantConn  int           // connections the peer must see (-1: do not check)
	minTime   time.Duration // pamtester takes at least this long
	maxTime   time.Duration // and at most this long (default minTime+5s)
	wantLog   []string      // substrings of the module's syslog, when captured
}

const prompt = "Verification code:"

func TestPAMModule(t *testing.T) {
	so := buildModule(t)
	logs := startSyslog(t)
	svc := fmt.Sprintf("mnguard-test-%d", os.Getpid())
	svcFile := filepath.Join("/etc/pam.d", svc)
	t.Cleanup(func() { os.Remove(svcFile) })

	const code = "739154"
	long := strings.Repeat("8", 64)
	offline := "mnguard: the server cannot be reached. Offline challenge for testuser on terminal 3f2a9c1e (pc-01): 1234-5678. Ask the helpdesk for an offline login code."
	cases := []pamCase{
		{name: "accepted", code: code, answer: answer(resAccepted, ""), wantOK: true,
			want: []string{prompt}, wantConn: 2, wantLog: []string{"begin: agent answered result 0", "verify: agent answered result 0"}},
		{name: "accepted with info message", code: code, answer: answer(resAccepted, "offset learned"),
			wantOK: true, want: []string{"offset learned"}, wantConn: 2},
		{name: "code sent as typed, spaces kept", code: " 739 154 ", answer: answer(resAccepted, ""),
			wantOK: true, wantConn: 2},
		{name: "64-byte recovery code", code: long, answer: answer(resAccepted, ""), wantOK: true, wantConn: 2},
		{name: "unknown argument ignored", code: code, args: "bogus=1", answer: answer(resAccepted, ""),
			wantOK: true, wantConn: 2, wantLog: []string{"unknown argument ignored: bogus=1"}},
		{name: "rejected", code: code, answer: answer(resRejected, "wrong code"),
			want: []string{outAuthErr, "wrong code"}, wantConn: 2},
		{name: "locked", code: code, answer: answer(resLocked, ""),
			want: []string{outMaxTry, "account locked: call the helpdesk"}, wantConn: 2},
		{name: "unavailable", code: code, answer: answer(resUnavailable, "server unreachable"),
			want: []string{outUnavail, "server unreachable"}, wantConn: 2},
		{name: "bad request", code: code, answer: answer(resBadRequest, "bad request"),
			want: []string{outAuthErr}, wantConn: 2},
		{name: "not permitted", code: code, answer: answer(resNotPermit, "not permitted"),
			want: []string{outPerm, "not permitted"}, wantConn: 2},
		{name: "control bytes in message are replaced", code: code, answer: answer(resRejected, "a\x1b[2Jb"),
			want: []string{outAuthErr, "a?[2Jb"}, wantConn: 2},
		{name: "unknown result", code: code, answer: answer(9, ""), want: []string{outUnavail}, wantConn: 2},
		{name: "wrong version", code: code,
			answer: raw(frame([]byte{2, resAccepted, 0, 0})), want: []string{outUnavail}, wantConn: 2},
		{name: "message length mismatch", code: code,
			answer: raw(frame([]byte{1, resAccepted, 0, 5, 'x'})), want: []string{outUnavail}, wantConn: 2},
		{name: "zero-length frame", code: code, answer: raw([]byte{0, 0, 0, 0}), want: []string{outUnavail}, wantConn: 2},
		{name: "oversized frame", code: code, answer: raw([]byte{0, 0, 0x13, 0x88, 1, 0, 0, 0}),
			want: []string{outUnavail}, wantConn: 2},
		{name: "truncated frame", code: code, answer: raw([]byte{0, 0, 0, 10, 1, 0}),
			want: []string{outUnavail}, wantConn: 2, wantLog: []string{"closed the connection before a whole answer"}},
		{name: "no answer at all", code: code, answer: raw(nil), want: []string{outUnavail}, wantConn: 2},
		{name: "peer never answers", code: code, hang: true, want: []string{outUnavail}, wantConn: 2,
			minTime: 2 * time.Second, wantLog: []string{"Connection timed out"}},
		{name: "agent down", code: code, noSocket: true, want: []string{outUnavail}, wantNot: []string{prompt}, wantConn: 0,
			wantLog: []string{"is mnguard-agent running?"}},
		{name: "socket not owned by root", code: code, owner: 65534, answer: answer(resAccepted, ""),
			want: []string{outUnavail}, wantNot: []string{prompt}, wantConn: 0, wantLog: []string{"owned by uid 65534, not root"}},
		{name: "socket dir writable by others", code: code, dirMode: 0o777, answer: answer(resAccepted, ""),
			want: []string{outUnavail}, wantNot: []string{prompt}, wantConn: 0, wantLog: []string{"not writable by group or others"}},
		{name: "empty code", code: "", answer: answer(resAccepted, ""), want: []string{outAuthErr}, wantConn: 1},
		{name: "overlong code", code: long + "8", answer: answer(resAccepted, ""), want: []string{outAuthErr}, wantConn: 1},

		// begin, the first exchange.
		{name: "begin message shown before the prompt", code: "12345-67890",
			begin: script{answer: answer(resAccepted, offline)}, answer: answer(resAccepted, "offline login code accepted"),
			wantOK: true, want: []string{offline, prompt, "offline login code accepted"}, wantConn: 2},
		{name: "begin message with control bytes", code: code,
			begin: script{answer: answer(resAccepted, "line\none\x1b[2J")}, answer: answer(resAccepted, ""),
			wantOK: true, want: []string{"line?one?[2J"}, wantConn: 2},
		{name: "begin not permitted", code: code, begin: script{answer: answer(resNotPermit, "not permitted to verify this user")},
			answer: answer(resAccepted, ""), want: []string{outPerm, "not permitted to verify this user"},
			wantNot: []string{prompt}, wantConn: 1},
		{name: "begin bad request", code: code, begin: script{answer: answer(resBadRequest, "user contains a control character")},
			answer: answer(resAccepted, ""), want: []string{outAuthErr, "control character"}, wantNot: []string{prompt}, wantConn: 1},
		{name: "begin unavailable", code: code, begin: script{answer: answer(resUnavailable, "internal error in the agent")},
			answer: answer(resAccepted, ""), want: []string{outUnavail, "internal error"}, wantNot: []string{prompt}, wantConn: 1},
		{name: "begin answer malformed", code: code, begin: script{answer: raw(frame([]byte{1, resAccepted, 0, 9, 'x'}))},
			answer: answer(resAccepted, ""), want: []string{outUnavail}, wantNot: []string{prompt}, wantConn: 1},
		{name: "begin unknown result", code: code, begin: script{answer: answer(7, "")},
			answer: answer(resAccepted, ""), want: []string{outUnavail}, wantNot: []string{prompt}, wantConn: 1},
		{name: "begin never answered", code: code, begin: script{hang: true}, answer: answer(resAccepted, ""),
			want: []string{outUnavail}, wantNot: []string{prompt}, wantConn: 1, minTime: 2 * time.Second,
			wantLog: []string{"Connection timed out"}},
		// One deadline for both exchanges: a slow begin leaves less for verify.
		{name: "slow begin and silent verify share the timeout", code: code,
			begin: script{answer: answer(resAccepted, ""), delay: 1200 * time.Millisecond}, hang: true,
			want: []string{outUnavail, prompt}, wantConn: 2, minTime: 2 * time.Second, maxTime: 2800 * time.Millisecond},
		{name: "slow begin and slow verify exceed the timeout together", code: code,
			begin:  script{answer: answer(resAccepted, ""), delay: 1200 * time.Millisecond},
			answer: answer(resAccepted, ""), delay: 1200 * time.Millisecond,
			want: []string{outUnavail}, wantConn: 2, minTime: 2 * time.Second, maxTime: 2800 * time.Millisecond},
		// The time at the prompt does not count.
		{name: "slow typing is not timed", code: code, typeAfter: 2500 * time.Millisecond,
			begin:  script{answer: answer(resAccepted, ""), delay: 500 * time.Millisecond},
			answer: answer(resAccepted, ""), delay: 500 * time.Millisecond,
			wantOK: true, wantConn: 2, minTime: 3 * time.Second},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir() // root-owned, 0700
			if tc.dirMode != 0 {
				if err := os.Chmod(dir, tc.dirMode); err != nil {
					t.Fatal(err)
				}
			}
			sock := filepath.Join(dir, "pam.sock")
			var p *peer
			if !tc.noSocket {
				begin := tc.begin
				if begin.answer == nil && !begin.hang {
					begin.answer = answer(resAccepted, "")
				}
				p = startPeer(t, sock, begin, script{answer: tc.answer, delay: tc.delay, hang: tc.hang})
				if tc.owner != 0 {
					if err := os.Chown(sock, tc.owner, tc.owner); err != nil {
						t.Fatal(err)
					}
				}
			}
			line := fmt.Sprintf("auth required %s socket=%s timeout=2 debug %s\naccount required pam_permit.so\n",
				so, sock, tc.args)
			if err := os.WriteFile(svcFile, []byte(line), 0o644); err != nil {
				t.Fatal(err)
			}

			logStart := logs.mark()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "pamtester", "-v", svc, "testuser", "authenticate")
			if tc.typeAfter > 0 {
				pr, pw, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				defer pr.Close()
				cmd.Stdin = pr
				timer := time.AfterFunc(tc.typeAfter, func() {
					pw.WriteString(tc.code + "\n")
					pw.Close()
				})
				defer timer.Stop()
			} else {
				cmd.Stdin = strings.NewReader(tc.code + "\n")
			}
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err := cmd.Run()
			took := time.Since(start)
			text := out.String()
			t.Logf("pamtester (%v):\n%s", took.Round(time.Millisecond), text)

			if tc.wantOK {
				if err != nil || !strings.Contains(text, outSuccess) {
					t.Fatalf("want success, got err=%v", err)
				}
			} else {
				if err == nil || strings.Contains(text, outSuccess) {
					t.Fatalf("want failure, pamtester succeeded")
				}
			}
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("output lacks %q", w)
				}
			}
			maxTime := tc.maxTime
			if maxTime == 0 {
				maxTime = tc.minTime + 5*time.Second
			}
			if tc.minTime > 0 && (took < tc.minTime || took > maxTime) {
				t.Errorf("took %v, want %v to %v", took, tc.minTime, maxTime)
			}
			for _, w := range tc.wantNot {
				if strings.Contains(text, w) {
					t.Errorf("output has %q", w)
				}
			}
			if tc.code != "" && strings.Contains(text, strings.TrimSpace(tc.code)) {
				t.Errorf("the code appears in pamtester's output")
			}

			if logs.ok {
				time.Sleep(50 * time.Millisecond) // let the datagrams arrive
				l := logs.since(logStart)
				if strings.Contains(l, strings.TrimSpace(tc.code)) && tc.code != "" {
					t.Errorf("the code appears in syslog:\n%s", l)
				}
				want := tc.wantLog
				if !tc.noSocket && tc.wantConn > 0 {
					want = append(want, "connecting to", "request sent")
				}
				for _, w := range want {
					if !strings.Contains(l, w) {
						t.Errorf("syslog lacks %q:\n%s", w, l)
					}
				}
			}
			if p != nil && tc.wantConn >= 0 {
				p.mu.Lock()
				conns, reqs, errs := p.conns, append([]request(nil), p.reqs...), append([]error(nil), p.errs...)
				p.mu.Unlock()
				if conns != tc.wantConn {
					t.Errorf("peer saw %d connections, want %d", conns, tc.wantConn)
				}
				for _, e := range errs {
					t.Errorf("peer: malformed request: %v", e)
				}
				for i, r := range reqs {
					// begin first, then verify with the code.
					wantTyp, wantCode := byte(typeBegin), ""
					if i > 0 {
						wantTyp, wantCode = typeVerify, tc.code
					}
					if r.version != protoVersion || r.typ != wantTyp {
						t.Errorf("request %d: version %d type %d, want 1 %d", i, r.version, r.typ, wantTyp)
					}
					if r.user != "testuser" || r.service != svc || r.code != wantCode {
						t.Errorf("request %d: user=%q service=%q code=%q, want testuser %q %q",
							i, r.user, r.service, r.code, svc, wantCode)
					}
				}
			}
		})
	}

}
