package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// envRunMain makes the test binary run main instead of the tests: the
// tests start the collector as a real process of its own this way.
const envRunMain = "MNGUARD_SERVER_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envRunMain) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// syncBuffer is a bytes.Buffer written by a process and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serverProc is mnguard-server running as a process of its own.
type serverProc struct {
	cmd     *exec.Cmd
	out     *syncBuffer // stdout and stderr
	done    chan struct{}
	dataDir string
	grpc    string // the gRPC address, once listening
}

// startServer runs "mnguard-server ARGS…" (the test binary as main),
// stopped with SIGTERM when the test ends.
func startServer(t *testing.T, args ...string) *serverProc {
	t.Helper()
	p := &serverProc{out: &syncBuffer{}, done: make(chan struct{})}
	for i, a := range args {
		if a == "--data-dir" && i+1 < len(args) {
			p.dataDir = args[i+1]
		}
	}
	p.cmd = exec.Command(os.Args[0], args...)
	p.cmd.Env = append(os.Environ(), envRunMain+"=1")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("mnguard-server %s:\n%s", strings.Join(args, " "), p.out.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits for the exit (SIGKILL after 15 s).
func (p *serverProc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Errorf("mnguard-server did not stop within 15 s of SIGTERM")
		p.cmd.Process.Kill()
		<-p.done
	}
}

// exited waits up to d for the process to end and returns its exit code,
// or -1 if it still runs.
func (p *serverProc) exited(d time.Duration) int {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		return -1
	}
}

// waitLog waits until the output holds n lines matching re and returns
// them.
func (p *serverProc) waitLog(t *testing.T, re *regexp.Regexp, n int, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var got []string
		sc := bufio.NewScanner(strings.NewReader(p.out.String()))
		for sc.Scan() {
			if re.MatchString(sc.Text()) {
				got = append(got, sc.Text())
			}
		}
		if len(got) >= n {
			return got
		}
		select {
		case <-p.done:
			t.Fatalf("mnguard-server exited (%v) before logging %d lines matching %s:\n%s", p.cmd.ProcessState, n, re, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %d lines matching %s within %s:\n%s", n, re, within, p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var listeningRE = regexp.MustCompile(`msg="collector listening" grpc=(\S+)`)

// waitListening waits for the collector's "listening" line and keeps the
// gRPC address it names.
func (p *serverProc) waitListening(t *testing.T, within time.Duration) {
	t.Helper()
	line := p.waitLog(t, listeningRE, 1, within)[0]
	p.grpc = listeningRE.FindStringSubmatch(line)[1]
}

// conn dials the collector's gRPC API, trusting the data directory's CA,
// with the client certificate when one is given.
func (p *serverProc) conn(t *testing.T, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(p.dataDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	cc, err := grpc.NewClient(p.grpc, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// adminCtx carries the first admin's API token of dataDir.
func adminCtx(t *testing.T, ctx context.Context, dataDir string) context.Context {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.TrimSpace(string(tok)))
}

// enrollAndReport enrolls a terminal through the collector p with an
// enrollment token made with adminDir's admin token, as an agent does (a
// CSR, the Enroll RPC), then reports one event over mutual TLS and checks
// the acknowledgement. It returns the terminal ID, the enrollment and the
// terminal's client certificate.
func enrollAndReport(t *testing.T, p *serverProc, adminDir string) (string, *mnguardv1.EnrollResponse, *tls.Certificate) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cc := p.conn(t, nil)
	tokResp, err := mnguardv1.NewAdminServiceClient(cc).CreateEnrollmentToken(adminCtx(t, ctx, adminDir), &mnguardv1.CreateEnrollmentTokenRequest{Uses: 1, Note: "test"})
	if err != nil {
		t.Fatalf("CreateEnrollmentToken: %v", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	enr, err := mnguardv1.NewAgentServiceClient(cc).Enroll(ctx, &mnguardv1.EnrollRequest{Token: tokResp.Token, CsrDer: csr,
		Host: &mnguardv1.HostFacts{Hostname: "pc-" + strings.ToLower(t.Name())}})
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	cert := &tls.Certificate{Certificate: [][]byte{enr.CertificateDer}, PrivateKey: key}
	report(t, p, cert, 1)
	return enr.TerminalId, enr, cert
}

// report sends event seq of the terminal of cert over mutual TLS and
// checks that the collector acknowledges it.
func report(t *testing.T, p *serverProc, cert *tls.Certificate, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := mnguardv1.NewAgentServiceClient(p.conn(t, cert)).Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{{
		Seq: seq, Time: timestamppb.Now(), Type: "agent.start", Severity: mnguardv1.Severity_SEVERITY_INFO, Message: "started"}}})
	if err != nil {
		t.Fatalf("Report: %v", err)
	}
	if len(rep.AckedSeqs) != 1 || rep.AckedSeqs[0] != seq {
		t.Fatalf("Report acknowledged %v, want [%d]", rep.AckedSeqs, seq)
	}
}
