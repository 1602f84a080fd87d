//go:build unix

package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PGCluster is a throw-away PostgreSQL cluster: a data directory in a
// temporary directory and a server listening only on a unix socket there
// (no TCP port to collide with another test binary's). DSN reaches its
// "postgres" database as the superuser; child processes can use it too.
type PGCluster struct {
	DSN string
	// Dir holds the socket, the data directory (data/) and the server's
	// log (postgres.log).
	Dir string

	bin    string
	cred   *syscall.Credential
	keeper *exec.Cmd
	stdin  io.WriteCloser // the keeper's; closed, it stops the server and removes Dir
	server *exec.Cmd
	exited chan struct{}
}

// keeperScript outlives the test binary: when its standard input closes
// (the binary exited, however it ended) it stops the server, immediately,
// and removes the cluster's directory. It ignores the terminal's signals
// so that a ^C reaches the test binary, not the clean-up.
const keeperScript = `trap '' INT TERM HUP QUIT
read -r _ || true
if [ -f "$DIR/data/postmaster.pid" ]; then
	$ASPG "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate -s -w -t 30 stop >/dev/null 2>&1 || true
fi
rm -rf "$DIR"
`

// NewPostgresCluster starts a cluster of the test's own, which it may stop
// and start again (Stop, Start), removed when the test ends. Most tests
// want Postgres: a database on the shared server.
func NewPostgresCluster(tb testing.TB) *PGCluster {
	tb.Helper()
	c, err := startCluster()
	if err != nil {
		missing(tb, err)
	}
	tb.Cleanup(c.close)
	return c
}

// startCluster runs initdb in a new temporary directory and starts the
// server. As root it runs both as the "postgres" user (PostgreSQL refuses
// root), which owns the directory.
func startCluster() (_ *PGCluster, err error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "mnguard-pg-")
	if err != nil {
		return nil, err
	}
	c := &PGCluster{Dir: dir, bin: bin}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	aspg := ""
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("PostgreSQL refuses to run as root and there is no postgres user: %w", err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		if err := os.Chown(dir, int(uid), int(gid)); err != nil {
			return nil, err
		}
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: false, Groups: []uint32{}}
		aspg = "setpriv --reuid=" + u.Uid + " --regid=" + u.Gid + " --clear-groups"
	}
	// The keeper first, so that nothing is left behind whatever fails next.
	c.keeper = exec.Command("/bin/sh", "-c", keeperScript)
	c.keeper.Env = append(os.Environ(), "DIR="+dir, "PGBIN="+bin, "ASPG="+aspg)
	c.keeper.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if c.stdin, err = c.keeper.StdinPipe(); err != nil {
		return nil, err
	}
	if err := c.keeper.Start(); err != nil {
		return nil, fmt.Errorf("start the cluster's keeper: %w", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"),
		"-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w: %s", err, bytes.TrimSpace(out))
	}
	c.DSN = "postgres://postgres@/postgres?host=" + url.QueryEscape(dir) + "&sslmode=disable"
	if err := c.Start(); err != nil {
		return nil, err
	}
	return c, nil
}

// Start starts the server (again) and waits until it accepts connections.
func (c *PGCluster) Start() error {
	if c.server != nil {
		return errors.New("the PostgreSQL server is running already")
	}
	logf, err := os.OpenFile(filepath.Join(c.Dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	if c.cred != nil {
		if err := logf.Chown(int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return err
		}
	}
	// fsync off: a test cluster's data need not survive a machine crash.
	srv := exec.Command(filepath.Join(c.bin, "postgres"), "-D", filepath.Join(c.Dir, "data"),
		"-k", c.Dir, "-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=300", "-c", "shared_buffers=64MB")
	srv.Dir = c.Dir
	srv.Stdout, srv.Stderr = logf, logf
	// Its own process group: a ^C goes to the test binary, whose exit the
	// keeper sees.
	srv.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Setpgid: true}
	if err := srv.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	c.server, c.exited = srv, make(chan struct{})
	go func(done chan struct{}) {
		srv.Wait()
		close(done)
	}(c.exited)

	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgx.Connect(ctx, c.DSN)
		if err == nil {
			conn.Close(ctx)
			cancel()
			return nil
		}
		cancel()
		select {
		case <-c.exited:
			c.server = nil
			return fmt.Errorf("postgres exited at start: %s", c.logTail())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres does not accept connections after a minute: %v: %s", err, c.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the server: fast shutdown (clients disconnected, SIGINT), or
// immediate (SIGQUIT, as a crash) when immediate is set; it waits until
// the server has exited.
func (c *PGCluster) Stop(immediate bool) error {
	if c.server == nil {
		return errors.New("the PostgreSQL server is not running")
	}
	sig := syscall.SIGINT
	if immediate {
		sig = syscall.SIGQUIT
	}
	if err := c.server.Process.Signal(sig); err != nil {
		return err
	}
	select {
	case <-c.exited:
	case <-time.After(time.Minute):
		c.server.Process.Kill()
		<-c.exited
	}
	c.server = nil
	return nil
}

func (c *PGCluster) logTail() string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "postgres.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}

// close stops the server and has the keeper remove the directory.
func (c *PGCluster) close() {
	if c.server != nil {
		c.Stop(false)
	}
	if c.stdin != nil {
		c.stdin.Close()
		c.keeper.Wait()
	} else {
		os.RemoveAll(c.Dir)
	}
}

// pgBinDir finds PostgreSQL's programs: MNGUARD_PG_BINDIR, else the newest
// of Debian's /usr/lib/postgresql/N/bin, else the directory of initdb on
// PATH.
func pgBinDir() (string, error) {
	if d := os.Getenv("MNGUARD_PG_BINDIR"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("PostgreSQL is not installed (Debian: apt-get install postgresql; or set MNGUARD_PG_BINDIR)")
}
