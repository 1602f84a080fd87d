package api

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/ca"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// TestResumedSessionCarriesCertificate: an agent that reconnects resumes
// its TLS session (no full handshake), the resumed connection still
// authenticates with the terminal's certificate, and a revocation in
// between refuses it as any other.
func TestResumedSessionCarriesCertificate(t *testing.T) {
	c := startCollector(t, false)
	c.terminal() // another terminal, so the store is not empty
	cert := enrollCert(c)
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	cache := tls.NewLRUClientSessionCache(4)
	dial := func() (mnguardv1.AgentServiceClient, func()) {
		cfg, err := pki.CATLSConfig(c.caDER, func() (*tls.Certificate, error) { return cert, nil })
		if err != nil {
			t.Fatal(err)
		}
		cfg.ServerName = "localhost"
		cfg.ClientSessionCache = cache
		cc, err := grpc.NewClient("passthrough:///"+c.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		return mnguardv1.NewAgentServiceClient(cc), func() { cc.Close() }
	}
	ctx := t.Context()
	report := func(a mnguardv1.AgentServiceClient, seq uint64) (bool, error) {
		var p peer.Peer
		_, err := a.Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{agentEvent(seq, "agent.start")}}, grpc.Peer(&p))
		info, _ := p.AuthInfo.(credentials.TLSInfo)
		return info.State.DidResume, err
	}
	a, done := dial()
	if resumed, err := report(a, 1); err != nil || resumed {
		t.Fatalf("first connection: resumed %v, %v", resumed, err)
	}
	// The session ticket comes after the handshake: give it time to land.
	time.Sleep(100 * time.Millisecond)
	done()
	a, done = dial()
	if resumed, err := report(a, 2); err != nil || !resumed {
		t.Fatalf("second connection: resumed %v, %v; want a resumed session that authenticates", resumed, err)
	}
	time.Sleep(100 * time.Millisecond)
	done()

	admin, actx := c.admin(store.RoleAdmin)
	if _, err := admin.RevokeTerminal(actx, &mnguardv1.RevokeTerminalRequest{Id: leaf.Subject.CommonName, Reason: "stolen"}); err != nil {
		t.Fatal(err)
	}
	a, done = dial()
	defer done()
	var resumed bool
	resumed, err = report(a, 3)
	if !resumed {
		t.Error("third connection did not resume")
	}
	wantCode(t, err, codes.PermissionDenied, "revoked")
	st, err := a.Subscribe(ctx, &mnguardv1.SubscribeRequest{})
	if err == nil {
		_, err = st.Recv()
	}
	wantCode(t, err, codes.PermissionDenied, "revoked")
}

// enrollCert enrolls a terminal through the Enroll RPC and returns its
// certificate.
func enrollCert(c *collector) *tls.Certificate {
	c.t.Helper()
	ctx := c.t.Context()
	secret, err := NewToken(enrollTokenPrefix)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.st.CreateEnrollmentToken(ctx, store.EnrollmentToken{
		ID: secret[len(secret)-8:], Hash: HashToken(secret), CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour), Uses: 1, UsesLeft: 1, CreatedBy: "test",
	}, testAudit); err != nil {
		c.t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		c.t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "terminal")
	if err != nil {
		c.t.Fatal(err)
	}
	res, err := mnguardv1.NewAgentServiceClient(c.dial(nil)).Enroll(ctx, &mnguardv1.EnrollRequest{
		Token: secret, CsrDer: csr, Host: &mnguardv1.HostFacts{Hostname: "term-tls", Os: "linux"},
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{res.GetCertificateDer()}, PrivateKey: key}
}

// TestSessionResumesAfterRestart: with a session ticket secret, a ticket
// of one gRPC server is taken by another of the same secret (a restarted
// collector, another replica); without one, a new server opens no older
// ticket. The resumed connection still authenticates.
func TestSessionResumesAfterRestart(t *testing.T) {
	for _, secret := range [][]byte{[]byte("0123456789abcdef0123456789abcdef"), nil} {
		t.Run(fmt.Sprintf("secret=%v", secret != nil), func(t *testing.T) {
			c := startCollectorWith(t, false, func(cfg *Config) { cfg.SessionTicketSecret = secret })
			cert := enrollCert(c)
			authority, _, err := ca.LoadOrCreate(c.dataDir, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			srvCert, err := authority.ServerCertificate([]string{"localhost"}, time.Now(), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			// The restarted server: a new gRPC server and listener.
			srv := c.svc.NewGRPCServer(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &srvCert, nil })
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve(l)
			t.Cleanup(srv.Stop)

			cache := tls.NewLRUClientSessionCache(4)
			report := func(addr string, seq uint64) (bool, error) {
				cfg, err := pki.CATLSConfig(c.caDER, func() (*tls.Certificate, error) { return cert, nil })
				if err != nil {
					t.Fatal(err)
				}
				cfg.ServerName = "localhost"
				cfg.ClientSessionCache = cache
				cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
				if err != nil {
					t.Fatal(err)
				}
				defer cc.Close()
				var p peer.Peer
				_, err = mnguardv1.NewAgentServiceClient(cc).Report(t.Context(), &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{agentEvent(seq, "agent.start")}}, grpc.Peer(&p))
				info, _ := p.AuthInfo.(credentials.TLSInfo)
				// The ticket comes after the handshake: give it time to land.
				time.Sleep(100 * time.Millisecond)
				return info.State.DidResume, err
			}
			if _, err := report(c.addr, 1); err != nil {
				t.Fatal(err)
			}
			resumed, err := report(l.Addr().String(), 2)
			if err != nil {
				t.Fatalf("on the restarted server: %v", err)
			}
			if resumed != (secret != nil) {
				t.Errorf("resumed on the restarted server: %v, want %v", resumed, secret != nil)
			}
		})
	}
}

// TestTicketKeys: the keys are the secret's and the day's, the previous
// day's second.
func TestTicketKeys(t *testing.T) {
	day := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	a := ticketKeys([]byte("secret a"), day)
	if b := ticketKeys([]byte("secret a"), day.Add(time.Hour)); a[0] != b[0] || a[1] != b[1] {
		t.Error("the same secret and day gave other keys")
	}
	if b := ticketKeys([]byte("secret b"), day); a[0] == b[0] {
		t.Error("another secret gave the same key")
	}
	next := ticketKeys([]byte("secret a"), day.Add(ticketPeriod))
	if next[0] == a[0] || next[1] != a[0] {
		t.Error("the next day's keys are not a new one, then this day's")
	}
}
