//go:build !linux

package daemon

import (
	"errors"
	"io/fs"
)

// newSocketLister: the probe is Linux's; elsewhere connections are checked
// at every report interval and network change.
func newSocketLister() (socketLister, error) { return nil, errors.ErrUnsupported }

// resolvFiles: Windows keeps its resolvers in the adapters' settings,
// which change with an IP Helper notification the check already hears.
func (d *Daemon) resolvFiles() []string { return nil }

func fileID(fs.FileInfo) uint64 { return 0 }
