//go:build !windows

package exemptions

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// FuzzServeConn feeds any bytes, as a client would send them, to the control
// socket's server side over a real socket pair: it never panics or hangs;
// a whole frame of 1 to MaxRequest bytes gets one answer frame of JSON, the
// handler's if the request decodes (and then the handler saw exactly that
// request) or an error otherwise; anything else gets no answer and never
// reaches the handler.
func FuzzServeConn(f *testing.F) {
	frame := func(s string) []byte {
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...)
	}
	f.Add(frame(`{"op":"list"}`))
	f.Add(frame(`{"op":"enter","code":"ABCDE-FGHJK"}`))
	f.Add(frame(`{"op":"challenge","device":"0781:5581:ABC123","duration_seconds":3600}`))
	f.Add(append(frame(`{"op":"list"}`), "trailing"...))
	f.Add(frame(`{"op":"list"`))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0x10, 0x01})
	f.Add([]byte{0, 0, 0, 9, '{'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := socketPair(t)
		defer client.Close()
		var calls []Request
		done := make(chan error, 1)
		go func() {
			done <- serveConn(context.Background(), server, func(_ context.Context, r Request) Response {
				calls = append(calls, r)
				return Response{Exemptions: []Info{{ID: "seen-" + r.Op}}}
			})
		}()
		// The server may close before reading everything (EPIPE).
		go func() { client.Write(in); client.CloseWrite() }()
		client.SetReadDeadline(time.Now().Add(3 * controlRequestTimeout))
		out, rerr := readFrame(client, MaxResponse)
		select {
		case <-done:
		case <-time.After(3 * controlRequestTimeout):
			t.Fatal("serveConn did not return")
		}

		whole := len(in) >= 4
		var size uint32
		if whole {
			size = binary.BigEndian.Uint32(in)
			whole = size >= 1 && size <= MaxRequest && uint64(len(in)) >= 4+uint64(size)
		}
		if !whole {
			if rerr == nil || len(calls) != 0 {
				t.Fatalf("no whole frame in % x: answer %q (%v), %d calls", in[:min(len(in), 16)], out, rerr, len(calls))
			}
			return
		}
		if rerr != nil {
			t.Fatalf("a whole frame got no answer: %v", rerr)
		}
		var resp Response
		if err := json.Unmarshal(out, &resp); err != nil {
			t.Fatalf("answer %q is not a Response: %v", out, err)
		}
		req, derr := DecodeRequest(in[4 : 4+size])
		switch {
		case derr != nil && (resp.Error == "" || len(calls) != 0):
			t.Fatalf("refused request (%v) answered %q with %d calls", derr, out, len(calls))
		case derr == nil && (len(calls) != 1 || calls[0] != req || len(resp.Exemptions) != 1 || resp.Exemptions[0].ID != "seen-"+req.Op):
			t.Fatalf("request %+v: calls %+v, answer %q", req, calls, out)
		}
		// Bytes after the frame are never read as another request: the
		// server closes (a reset when it left bytes unread).
		if rest, err := io.ReadAll(client); (err != nil && !errors.Is(err, syscall.ECONNRESET)) || len(rest) != 0 {
			t.Fatalf("after the answer: %q, %v", rest, err)
		}
	})
}

// FuzzReadFrame: the frame reader of both ends (requests up to MaxRequest,
// answers up to MaxResponse) returns a payload within its limit that
// writeFrame gives back byte for byte, or an error; it never allocates
// more than the limit.
func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, '{', '}'}, true)
	f.Add([]byte{0, 0, 0x10, 0x01}, true)
	f.Add([]byte{0, 0x10, 0, 0x01, 'x'}, false)
	f.Add([]byte{0, 0, 0, 0}, false)
	f.Add([]byte{0, 0}, true)
	f.Fuzz(func(t *testing.T, in []byte, request bool) {
		limit := MaxResponse
		if request {
			limit = MaxRequest
		}
		p, err := readFrame(bytes.NewReader(in), limit)
		if err != nil {
			return
		}
		if len(p) == 0 || len(p) > limit {
			t.Fatalf("payload of %d bytes, limit %d", len(p), limit)
		}
		var buf bytes.Buffer
		if err := writeFrame(&buf, p); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), in[:4+len(p)]) {
			t.Fatalf("write(read(x)) = % x, want % x", buf.Bytes(), in[:4+len(p)])
		}
	})
}

// socketPair returns the two ends of a connected unix stream socket pair.
func socketPair(t *testing.T) (client, server *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}
