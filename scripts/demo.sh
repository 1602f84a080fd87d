#!/usr/bin/env bash
# make run: a collector on embedded storage and one agent enrolled on this
# machine, both in .demo/, until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=${MNGUARD_DEMO_DIR:-$PWD/.demo}
GRPC=${MNGUARD_DEMO_GRPC:-127.0.0.1:8443}
HTTP=${MNGUARD_DEMO_HTTP:-127.0.0.1:8444}
BIN=$PWD/bin
mkdir -p "$DEMO"

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	echo "demo stopped; its data stays in $DEMO (make clean removes it)"
}
trap cleanup EXIT
trap "exit 130" INT TERM

pin=$("$BIN/mnguard-server" init --data-dir "$DEMO/server" 2>/dev/null)
"$BIN/mnguard-server" serve --data-dir "$DEMO/server" --grpc-listen "$GRPC" --http-listen "$HTTP" \
	>"$DEMO/server.log" 2>&1 &
pids+=($!)

export MNGUARD_SERVER=$GRPC MNGUARD_CA_PIN=$pin
ctl() { "$BIN/mnguardctl" --token-file "$DEMO/server/admin.token" "$@"; }
for _ in $(seq 100); do
	ctl whoami >/dev/null 2>&1 && break
	sleep 0.1
done
ctl whoami >/dev/null || { echo "collector did not start; see $DEMO/server.log" >&2; tail -5 "$DEMO/server.log" >&2; exit 1; }

# The demo agent checks a PAM stack of the demo's own (.demo/pam.d/login),
# which requires pam_mnguard: the demo terminal can be compliant without
# touching this machine's /etc/pam.d.
mkdir -p "$DEMO/pam.d"
printf 'auth required pam_unix.so\nauth required %s/pam_mnguard.so socket=%s/run/pam.sock\n' "$BIN" "$DEMO" >"$DEMO/pam.d/login"
cat >"$DEMO/agent.yaml" <<YAML
server: $GRPC
state_dir: $DEMO/agent
report_interval: 60s
log_level: info
mfa:
  socket: $DEMO/run/pam.sock
  pam_dir: $DEMO/pam.d
  services: [login]
YAML
if [ ! -f "$DEMO/agent/enrollment.json" ]; then
	token=$(ctl tokens create --ttl 10m --uses 1 --note "make run demo" | head -n 1)
	"$BIN/mnguard-agent" enroll --config "$DEMO/agent.yaml" --server "$GRPC" --token "$token" --ca-pin "$pin" >>"$DEMO/agent.log"
fi
"$BIN/mnguard-agent" run --config "$DEMO/agent.yaml" >"$DEMO/agent.log" 2>&1 &
pids+=($!)

# Wait until the agent is connected and has delivered its first report.
for _ in $(seq 100); do
	"$BIN/mnguard-agent" status --config "$DEMO/agent.yaml" >/dev/null 2>&1 && break
	sleep 0.1
done

# A TOTP user to try the login gate with; the secret is shown once, so the
# demo keeps it.
if [ ! -f "$DEMO/user-demo.json" ]; then
	ctl users enroll demo -o json >"$DEMO/user-demo.json"
	chmod 600 "$DEMO/user-demo.json"
fi
secret=$(sed -n 's/^ *"secret": *"\([A-Z2-7]*\)".*/\1/p' "$DEMO/user-demo.json")

password=$(cat "$DEMO/server/admin.password")
admin_totp=$(cat "$DEMO/server/admin.totp")
# The collector evaluates the terminal within a moment of its first report.
for _ in $(seq 50); do
	ctl terminals list -o csv 2>/dev/null | grep -q ',compliant,\|,non-compliant,' && break
	sleep 0.2
done

cat <<MSG

mnguard demo is running (logs in $DEMO/server.log and $DEMO/agent.log).

  Web console:      https://$HTTP/
                    (its certificate comes from the collector's own CA, $DEMO/server/ca.crt:
                    import it into the browser, or accept the warning for this demo)
  Sign in as:       admin
  Password:         $password
  TOTP secret:      $admin_totp   (add it to an authenticator app, or:)
  Code right now:   oathtool --totp -b $admin_totp
  CA pin:           $pin
  Admin API token:  $DEMO/server/admin.token

The enrolled terminals and their compliance, as an administrator sees them:

MSG
ctl terminals list
cat <<MSG

Try it yourself in another shell:

  export MNGUARD_SERVER=$GRPC MNGUARD_CA_PIN=$pin
  bin/mnguardctl --token-file $DEMO/server/admin.token terminals list
  bin/mnguardctl --token-file $DEMO/server/admin.token terminals show ID
  bin/mnguard-agent status --config $DEMO/agent.yaml
  bin/mnguardctl --token-file $DEMO/server/admin.token reports self-inspection --from $(date +%Y-%m-01) --to $(date +%F) --out report.html

A login with the second factor (user "demo", TOTP secret $secret), as root:

  echo "auth required $BIN/pam_mnguard.so socket=$DEMO/run/pam.sock" >/etc/pam.d/mnguard-demo
  oathtool --totp -b $secret | pamtester mnguard-demo demo authenticate

Press Ctrl-C to stop the demo.
MSG
wait
