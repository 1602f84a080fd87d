//go:build !unix

package testenv

import (
	"errors"
	"testing"
)

// PGCluster is a throw-away PostgreSQL cluster; the tests start one on
// Unix only.
type PGCluster struct {
	DSN, Dir string
}

// NewPostgresCluster skips the test (fails under CI): the tests start
// PostgreSQL clusters on Unix only.
func NewPostgresCluster(tb testing.TB) *PGCluster {
	tb.Helper()
	missing(tb, errors.New("throw-away clusters are started on Unix only"))
	return nil
}

// Start is not available here.
func (c *PGCluster) Start() error { return errors.ErrUnsupported }

// Stop is not available here.
func (c *PGCluster) Stop(immediate bool) error { return errors.ErrUnsupported }

func startCluster() (*PGCluster, error) {
	return nil, errors.New("throw-away clusters are started on Unix only: set MNGUARD_TEST_POSTGRES")
}
