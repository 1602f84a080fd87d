#!/usr/bin/env bash
# testpg.sh COMMAND [ARG...]: runs COMMAND with MNGUARD_TEST_POSTGRES set to
# the superuser DSN of a throw-away PostgreSQL cluster (Debian's postgresql
# package): initdb in a temporary directory, the server listening on a unix
# socket there only (no TCP port), stopped and removed when COMMAND ends,
# also when it fails or is interrupted. With MNGUARD_TEST_POSTGRES already
# set it runs COMMAND as it is. Exits with COMMAND's status.
#
# Every test package then creates its databases on this one server
# (internal/testenv.Postgres); tests run by hand without it start a cluster
# per test binary instead.
set -euo pipefail
if [ $# -eq 0 ]; then
	echo "usage: $0 COMMAND [ARG...]" >&2
	exit 2
fi
if [ -n "${MNGUARD_TEST_POSTGRES:-}" ]; then
	exec "$@"
fi

bin=${MNGUARD_PG_BINDIR:-}
if [ -z "$bin" ]; then
	bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5n | tail -n1)
fi
if [ -z "$bin" ] || [ ! -x "$bin/postgres" ]; then
	echo "testpg: PostgreSQL is not installed (apt-get install postgresql, or set MNGUARD_PG_BINDIR or MNGUARD_TEST_POSTGRES)" >&2
	exit 1
fi

dir=$(mktemp -d /tmp/mnguard-testpg-XXXXXX)
as=()
if [ "$(id -u)" -eq 0 ]; then
	# PostgreSQL refuses to run as root.
	chown postgres:postgres "$dir"
	as=(setpriv --reuid=postgres --regid=postgres --clear-groups)
fi
stop() {
	status=$?
	if [ -f "$dir/data/postmaster.pid" ]; then
		"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 ||
			"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	rm -rf "$dir"
	exit "$status"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

(cd "$dir" && "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C \
	--no-sync --no-instructions >"$dir/initdb.log" 2>&1) || {
	cat "$dir/initdb.log" >&2
	exit 1
}
# fsync off: a test cluster's data need not survive a machine crash.
# max_connections: every test package's test databases, run in parallel.
(cd "$dir" && "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 -s \
	-o "-k $dir -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=500 -c shared_buffers=128MB" start) || {
	tail -n 30 "$dir/postgres.log" >&2
	exit 1
}
export MNGUARD_TEST_POSTGRES="postgres://postgres@/postgres?host=$dir&sslmode=disable"
echo "testpg: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at $dir" >&2
set +e
"$@"
status=$?
set -e
if [ $status -ne 0 ] && [ -n "${MNGUARD_TESTPG_LOG:-}" ]; then
	cp "$dir/postgres.log" "$MNGUARD_TESTPG_LOG" || true
fi
exit $status
