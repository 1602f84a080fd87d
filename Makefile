# mnguard — make run (demo), make test (everything), make bench (figures).
SHELL := /bin/bash
GO ?= go
TOOL := $(GO) tool -modfile=tools/go.mod
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/mnguard/mnguard/internal/version.Version=$(VERSION)
# grpcnotrace: grpc-go without golang.org/x/net/trace (and the net/http
# debug pages, html/template and text/template it pulls in), which mnguard
# never enables: 2.8 MB less code in the agent, which this kernel keeps
# resident whole.
TAGS := grpcnotrace
BIN := bin
CMDS := ./agent/cmd/mnguard-agent ./server/cmd/mnguard-server ./server/cmd/mnguardctl ./server/cmd/mnguard-loadgen
# Fuzz targets run briefly in make test: package:Target pairs.
FUZZ_TIME ?= 4s

.PHONY: all deps build pam cross proto proto-check check test unit wine-test fuzz bench run clean

all: build

# Debian packages the build and the tests need, installed when missing.
deps:
	@scripts/deps.sh

build: deps pam
	CGO_ENABLED=1 $(GO) build -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN)/ $(CMDS)

# pam_mnguard.so: a thin C client of the agent's socket (no Go runtime in
# login processes).
PAM_CFLAGS := -std=gnu11 -Wall -Wextra -Werror -fPIC -O2 -D_FORTIFY_SOURCE=2 -fstack-protector-strong
pam: deps
	@mkdir -p $(BIN)
	$(CC) $(PAM_CFLAGS) -shared -o $(BIN)/pam_mnguard.so agent/pam/pam_mnguard.c -lpam

# Windows builds have no cgo: gousb is Linux-only behind a build constraint.
cross:
	GOOS=windows GOARCH=amd64 CGO_ENABLED=0 $(GO) build -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o dist/windows-amd64/ ./agent/cmd/mnguard-agent ./server/cmd/mnguard-server ./server/cmd/mnguardctl

proto:
	$(TOOL) buf lint
	$(TOOL) buf generate

# Fails when the committed generated code differs from what the .proto files
# generate.
proto-check:
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	$(TOOL) buf lint && \
	$(TOOL) buf generate -o $$tmp && \
	for f in $$tmp/proto/mnguard/v1/*.go; do \
		if ! cmp -s $$f proto/mnguard/v1/$$(basename $$f); then \
			echo "proto: proto/mnguard/v1/$$(basename $$f) is stale: run 'make proto' and commit"; exit 1; fi; \
	done && \
	for f in proto/mnguard/v1/*.pb.go; do \
		[ -f $$tmp/proto/mnguard/v1/$$(basename $$f) ] || { echo "proto: $$f has no .proto source"; exit 1; }; \
	done && echo "proto: generated code is current"

# Formatting, vet, staticcheck, and every package built and vetted for Windows.
check: deps
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
		if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	$(TOOL) staticcheck ./...
	$(TOOL) staticcheck -tags mnguard_testclock ./agent/cmd/mnguard-agent/
	GOOS=windows GOARCH=amd64 CGO_ENABLED=0 $(GO) vet ./...
	GOOS=windows GOARCH=amd64 CGO_ENABLED=0 $(GO) test -exec=true ./... >/dev/null
	CGO_ENABLED=0 $(GO) build ./...

# PostgreSQL: scripts/testpg.sh starts a throw-away cluster for the run
# (unless MNGUARD_TEST_POSTGRES names a server) and exports its DSN to every
# test package; the store's whole suite then runs a second time on it
# (MNGUARD_STORE_BACKEND=postgres), without the race detector: the
# PostgreSQL-only tests (replicas, outages, deadlocks) ran under it in the
# first run, and the detector took this run from 4 to 7 minutes.
unit: deps
	scripts/testpg.sh bash -c '$(GO) test -race -count=1 -timeout 15m ./... && MNGUARD_STORE_BACKEND=postgres $(GO) test -count=1 -timeout 15m ./server/store/...'

fuzz:
	@scripts/fuzz.sh $(FUZZ_TIME)

# The agent's Windows code paths run for real under Wine (scripts/wine/):
# service manager, registry, SetupAPI, gopsutil's Windows readers.
# ./agent/media/ runs its Windows tests (the Windows API, SetupAPI, registry
# policy, and the platform over a fake where Wine 8 lacks an IOCTL, which
# TestWinAPIDiskIoctls names); its sysfs tests read testdata trees of
# symbolic links, which the Windows build cannot follow, and run on Linux.
# ./agent/netcheck/ and ./agent/netcheck/winfw/ run their Windows tests (IP
# Helper adapters, routes and DNS compared with Linux's own view, the change
# notifications, sockets, SetupAPI; Windows Firewall's COM objects are stubs
# in Wine 8, which TestWindowsFirewallCOM names), and the Manager's and
# Evaluate's portable tests; not the Manager's state-file tests, which use
# t.TempDir (below).
# Left out: ./agent/config/ ./agent/spool/ ./internal/pki/ ./server/ca/. Their
# tests pass under Wine, but every test that uses t.TempDir then fails in its
# cleanup ("TempDir RemoveAll cleanup: unlinkat ...: Invalid function"):
# Go 1.26's os.RemoveAll deletes with NtSetInformationFile(
# FileDispositionInformationEx), which Wine 8.0 answers STATUS_NOT_IMPLEMENTED
# where Go falls back only on STATUS_INVALID_INFO_CLASS (older Windows).
wine-test:
	@scripts/wine/setup.sh
	GOOS=windows GOARCH=amd64 CGO_ENABLED=0 $(GO) test -count=1 -exec "$(CURDIR)/scripts/wine/exec.sh" ./agent/cmd/mnguard-agent/ ./agent/posture/
	GOOS=windows GOARCH=amd64 CGO_ENABLED=0 $(GO) test -count=1 -exec "$(CURDIR)/scripts/wine/exec.sh" -run 'Windows$$' ./agent/exemptions/
	GOOS=windows GOARCH=amd64 CGO_ENABLED=0 $(GO) test -count=1 -exec "$(CURDIR)/scripts/wine/exec.sh" -run '^Test(Win|Windows|ClassifyWin)' ./agent/media/
	GOOS=windows GOARCH=amd64 CGO_ENABLED=0 $(GO) test -count=1 -exec "$(CURDIR)/scripts/wine/exec.sh" -run '^Test(Windows|Evaluate|Manager)' -skip 'CutState' ./agent/netcheck/ ./agent/netcheck/winfw/

test: deps proto-check check unit wine-test fuzz

# Figures the issues name. Benchmarks that loop inside and print their own
# percentiles run once (-benchtime 1x): every e2e benchmark (ingest over
# mTLS, login, exemption to writable, the agent's idle RSS and CPU over
# MNGUARD_BENCH_IDLE, default 10m), the console's page latencies over 10,000
# terminals and 1,000,000 events (server/web; the seeded database is cached
# in ~/.cache/mnguard-bench, keyed by the schema), and removable media's
# attach-to-read-only, exemption-to-writable and drift-repair latencies
# (agent/media).
# The e2e and console packages run one after the other (-p 1), so that
# neither's load is in the other's figures. Micro-benchmarks run with go
# test's default benchtime: media's Protect of a loop device, the store's
# report ingest, batch event insert and posture upsert on SQLite
# (server/store), the spool's append and append+ack on bbolt (agent/spool).
# Segment isolation: one socket scan with 5,000 connections (10,000
# sockets, sock_diag and gopsutil side by side), netlink route change to
# the watch's callback and to the Manager's finding (p50/p99 over 100
# changes), Evaluate and a whole scan, nftables Apply/Check and flush to
# repair notice, the daemon's 1 s socket probe; the e2e package's
# RouteChangeToEvent (ip route add in the terminal's namespace to the
# event stored by the collector).
# Scale (issue 13), real processes driven by mnguard-loadgen, each on its
# own: the most terminals one collector holds (19,500 mTLS connections and
# streams, the fd limit; MNGUARD_BENCH_CAPACITY_AGENTS) idle and at the
# 60 s interval beside a plain grpc-go server (MNGUARD_BENCH_CAPACITY_PHASE,
# default 60s each; MNGUARD_BENCH_BEFORE_BIN=PATH adds another build of
# mnguard-server), the reconnect storm after a SIGKILL of the collector
# (MNGUARD_BENCH_STORM_AGENTS), sustained ingest on SQLite and PostgreSQL
# (MNGUARD_BENCH_INGEST_SQLITE_RATE 2000, _PG_RATE 5000, _SECONDS 30,
# _EVENTS 1). Enrolled terminals are kept in ~/.cache/mnguard-bench.
SCALE_BENCH := BenchmarkCapacity|BenchmarkReconnectStorm|BenchmarkSustainedIngest
bench: build
	$(GO) test -p 1 -run '^$$' -bench . -skip '$(SCALE_BENCH)' -benchtime 1x -count 1 -timeout 60m ./e2e/ ./server/web/
	$(GO) test -run '^$$' -bench '$(SCALE_BENCH)' -benchtime 1x -count 1 -timeout 60m ./e2e/
	$(GO) test -run '^$$' -bench 'AttachToReadOnly|ExemptToWritable|DriftRepair' -benchtime 1x -count 1 -timeout 20m ./agent/media/
	$(GO) test -run '^$$' -bench 'ProtectLoop' -count 1 -timeout 10m ./agent/media/
	$(GO) test -run '^$$' -bench . -count 1 -timeout 20m ./server/store/ ./agent/spool/
	$(GO) test -run '^$$' -bench 'ScanSockets5000|RouteChangeToNotify' -benchtime 10x -count 1 -timeout 20m ./agent/netcheck/
	$(GO) test -run '^$$' -bench 'RouteChangeToFinding' -benchtime 1x -count 1 -timeout 10m ./agent/netcheck/
	$(GO) test -run '^$$' -bench 'Evaluate|ManagerScan' -count 1 -timeout 10m ./agent/netcheck/
	$(GO) test -run '^$$' -bench . -count 1 -timeout 20m ./agent/netcheck/nft/
	$(GO) test -run '^$$' -bench 'SocketProbe' -benchtime 200x -count 1 -timeout 10m ./agent/daemon/
	$(GO) test -run '^$$' -bench 'IdleStreams|Report' -benchtime 1x -count 1 -timeout 20m ./server/api/
	$(GO) test -run '^$$' -bench 'FanOut' -benchtime 1000x -count 1 -timeout 10m ./server/bus/
	$(GO) test -run '^$$' -bench 'ListTerminalsPage' -benchtime 20x -count 1 -timeout 20m ./server/cmd/mnguardctl/

run: build
	@scripts/demo.sh

clean:
	rm -rf $(BIN) dist .demo
