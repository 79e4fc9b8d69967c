#!/usr/bin/env bash
# Interop, policy delegation: a real `larkpost serve` whose on_rcpt asks
# Postfix policy servers with the policy module (check_policy_service's
# protocol), against postgrey on a unix socket and policyd-spf behind
# socat on TCP. Installs what is missing with apt-get.
#
# What is checked:
#  1. postgrey greylists: the first attempt gets postgrey's text
#     and its enhanced status code (450 4.2.0 Greylisted, see http://...,
#     sent because larkpost sends etrn_domain as Postfix does); the retry after --delay is
#     accepted and postgrey's PREPEND X-Greylist header is in the message.
#  2. policyd-spf. There is no network here, so it cannot look SPF up;
#     what it answers offline is its skip of loopback clients (its default
#     skip_addresses): "prepend X-Comment: SPF check N/A for local
#     connections ..." for the first query of an instance, "dunno" after.
#     So a message to two recipients carries the header once (instance
#     stable within a transaction), a second message on the same SMTP
#     connection carries it again (a new instance), and every query goes
#     over one policy connection (larkpost reuses it; socat forks one
#     policyd-spf per connection).
#  3. A service nobody listens on gives Postfix's default action,
#     451 4.3.5 Server configuration problem.
#
# policyd-spf comes from python3-spf-engine: postfix-policyd-spf-python
# only adds the /usr/bin/policyd-spf wrapper and pulls in Postfix itself.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v swaks >/dev/null || need+=(swaks)
command -v socat >/dev/null || need+=(socat)
[ -x /usr/sbin/postgrey ] || need+=(postgrey)
/usr/bin/python3 -c 'import spf_engine.policyd_spf' 2>/dev/null || need+=(python3-spf-engine)
if [ ${#need[@]} -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	for try in 1 2 3; do
		# No recommends: postgrey's would install an MTA.
		if apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; then break; fi
		echo "apt-get failed (try $try)"; sleep 5
	done
fi
for c in swaks socat python3 /usr/sbin/postgrey /usr/bin/python3; do command -v $c >/dev/null || { echo "$c is required"; exit 1; }; done

work=$(mktemp -d)
chmod 755 "$work" # postgrey drops to its own user and must reach $work/pg
pids=()
cleanup() {
	# Each daemon leads its own process group (setsid): this also ends the
	# policyd-spf processes socat forked.
	for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/larkpost" ./cmd/larkpost

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
smtp=$(free_port) spf=$(free_port) down=$(free_port)
wait_for() { for _ in $(seq 100); do "$@" 2>/dev/null && return 0; sleep 0.1; done; echo "timed out: $*"; return 1; }

# postgrey on a unix socket, greylisting for 2 s, never whitelisting.
delay=2
mkdir -p "$work/pg"
chown postgrey "$work/pg"
setsid /usr/sbin/postgrey --unix="$work/pg/socket" --dbdir="$work/pg" --delay=$delay \
	--auto-whitelist-clients=0 --hostname=mx.policy.test > "$work/postgrey.log" 2>&1 &
pids+=($!)

# policyd-spf, one process per connection, as Postfix's spawn(8) would.
cat > "$work/policyd-spf" <<'SH'
#!/bin/sh
exec /usr/bin/python3 -c 'from spf_engine.policyd_spf import main; main()' /dev/null
SH
chmod 755 "$work/policyd-spf"
setsid socat -d -d TCP-LISTEN:$spf,bind=127.0.0.1,reuseaddr,fork EXEC:"$work/policyd-spf" 2> "$work/socat.log" &
pids+=($!)

cat > "$work/larkpost.star" <<STAR
config(
    allow_root = True,   # these runs are about policy servers, not the root split (.ci/privs.sh)
    hostname = "mx.policy.test",
    data_dir = "$work/data",
    networks = ["192.0.2.0/24"],   # loopback is an outside client here
    resolvers = [],
    listen = {"smtp": "127.0.0.1:$smtp"},
)

POSTGREY = "unix:$work/pg/socket"
SPF = "inet:127.0.0.1:$spf"
NOBODY = "inet:127.0.0.1:$down"

def on_rcpt(tx, rcpt):
    if rcpt.user == "grey":
        return access(policy.check(POSTGREY, tx, rcpt, timeout="5s"))
    if rcpt.user == "down":
        return access(policy.check(NOBODY, tx, rcpt, timeout="5s"))
    return access(policy.check(SPF, tx, rcpt, timeout="5s"))
STAR
"$work/larkpost" check -c "$work/larkpost.star"
setsid "$work/larkpost" serve -c "$work/larkpost.star" 2> "$work/serve.log" &
pids+=($!)
wait_for grep -q "listening on" "$work/serve.log"
wait_for test -S "$work/pg/socket"
wait_for grep -q "listening on" "$work/socat.log"

passed=0 failed=0
ok()   { echo "PASS: $1"; passed=$((passed+1)); }
fail() { echo "FAIL: $1"; failed=$((failed+1)); }
count() { ls "$work/data/mail/$1/new" 2>/dev/null | wc -l; }
wait_count() { for _ in $(seq 100); do [ "$(count "$1")" -ge "$2" ] && return 0; sleep 0.05; done; return 1; }
last() { ls -t "$work/data/mail/$1/new/"* | head -1; }
send() { swaks --server 127.0.0.1:$smtp --helo client.example --from ann@sender.example "$@" > "$work/swaks.txt" 2>&1 || true; }

# 1. postgrey: greylisted, then accepted after the delay.
send --to grey@mx.policy.test --header "Subject: greylist 1"
if grep -q "<\*\* *450 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/mx.policy.test.html" "$work/swaks.txt" \
	&& [ "$(count grey)" -eq 0 ]; then
	ok "postgrey: first attempt deferred with its text and status (450 4.2.0 Greylisted, see ...)"
else
	fail "postgrey first attempt"; cat "$work/swaks.txt"
fi
sleep $((delay + 1))
send --to grey@mx.policy.test --header "Subject: greylist 2"
if grep -q "<- *250 .*queued as" "$work/swaks.txt" && wait_count grey 1 \
	&& grep -q "^X-Greylist: delayed [0-9]* seconds by postgrey" "$(last grey)"; then
	ok "postgrey: retry after ${delay}s accepted, its PREPEND X-Greylist header in the message"
else
	fail "postgrey retry"; cat "$work/swaks.txt" "$work/postgrey.log"
fi

# 2. policyd-spf: two messages on one SMTP connection, the first to two
#    recipients.
if python3 - "$smtp" > "$work/py.txt" 2>&1 <<'PY'
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="client.example") as s:
    for subject, rcpts in (("spf 1", ["spf1@mx.policy.test", "spf2@mx.policy.test"]), ("spf 2", ["spf1@mx.policy.test"])):
        refused = s.sendmail("ann@sender.example", rcpts, f"Subject: {subject}\r\n\r\nhi\r\n")
        assert not refused, refused
print("sent")
PY
then
	header="^X-Comment: SPF check N/A for local connections - client-ip=127.0.0.1; helo=client.example; envelope-from=ann@sender.example"
	if wait_count spf1 2 && wait_count spf2 1; then
		first=$(grep -l "^Subject: spf 1" "$work/data/mail/spf1/new/"*)
		second=$(grep -l "^Subject: spf 2" "$work/data/mail/spf1/new/"*)
		n1=$(grep -c "$header" "$first" || true)
		n2=$(grep -c "$header" "$(last spf2)" || true)
		n3=$(grep -c "$header" "$second" || true)
		if [ "$n1" -eq 1 ] && [ "$n2" -eq 1 ]; then
			ok "policyd-spf: PREPEND reaches the message, once for two recipients (one instance per transaction)"
		else
			fail "policyd-spf header count $n1/$n2 (want 1/1)"; cat "$first"
		fi
		if [ "$n3" -eq 1 ]; then
			ok "policyd-spf: the next transaction on the connection is a new instance"
		else
			fail "policyd-spf second transaction: $n3 headers (want 1)"; cat "$second"
		fi
	else
		fail "policyd-spf messages not delivered"; cat "$work/py.txt"
	fi
else
	fail "policyd-spf: smtplib"; cat "$work/py.txt"
fi
conns=$(grep -c "accepting connection" "$work/socat.log" || true)
if [ "$conns" -eq 1 ]; then
	ok "three policyd-spf queries over one policy connection"
else
	fail "policyd-spf connections: $conns (want 1)"; cat "$work/socat.log"
fi

# 3. Nobody listening: Postfix's smtpd_policy_service_default_action.
send --to down@mx.policy.test
if grep -q "<\*\* *451 4.3.5 Server configuration problem" "$work/swaks.txt"; then
	ok "service down: 451 4.3.5 Server configuration problem"
else
	fail "service down"; cat "$work/swaks.txt"
fi

if [ $failed -ne 0 ]; then echo "--- server log"; cat "$work/serve.log"; fi
echo "interop-policy: $passed passed, $failed failed"
[ $failed -eq 0 ]
