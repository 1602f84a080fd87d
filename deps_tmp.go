//go:build deps

// Package mnguard is temporary: it pins dependencies until code imports them.
package mnguard

import (
	_ "github.com/google/gousb"
	_ "github.com/google/uuid"
	_ "github.com/kardianos/service"
	_ "github.com/pquerna/otp"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/shirou/gopsutil/v3/host"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/sys/windows"
	_ "gopkg.in/yaml.v3"
	_ "modernc.org/sqlite"
)
