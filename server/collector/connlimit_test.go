package collector

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// closedAtOnce reports whether the server closes c within d without a byte
// sent: how the collector turns away a connection over the limit.
func closedAtOnce(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err)
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestServeCapsConnectionsPerIP: one source address holds at most
// MaxConnsPerIP connections on each listener; more are closed at once,
// other addresses are not affected, and a closed connection frees its slot.
func TestServeCapsConnectionsPerIP(t *testing.T) {
	const max = 4
	httpAddr, grpcAddr, _ := serveForTest(t, Config{MaxConnsPerIP: max})
	for name, addr := range map[string]string{"gRPC": grpcAddr, "HTTPS": httpAddr} {
		t.Run(name, func(t *testing.T) {
			held := make([]net.Conn, max)
			for i := range held {
				held[i] = dialFrom(t, "127.0.0.1", addr)
			}
			for i, c := range held {
				if closedAtOnce(c, 200*time.Millisecond) {
					t.Fatalf("connection %d of %d closed", i+1, max)
				}
			}
			if extra := dialFrom(t, "127.0.0.1", addr); !closedAtOnce(extra, 2*time.Second) {
				t.Fatalf("connection %d from one address still open after 2s", max+1)
			}
			if other := dialFrom(t, "127.0.0.2", addr); closedAtOnce(other, 300*time.Millisecond) {
				t.Fatal("a connection from another address was closed")
			}
			held[0].Close()
			deadline := time.Now().Add(5 * time.Second)
			for {
				if c := dialFrom(t, "127.0.0.1", addr); !closedAtOnce(c, 300*time.Millisecond) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("a closed connection did not free its slot within 5s")
				}
			}
		})
	}
}
