#!/usr/bin/env bash
# Interop, shared state: two `larkpost serve` nodes on different ports
# share one Debian redis-server (state_store), as two MX nodes would.
#
# What is checked:
#  1. The engine/state suite against the real redis-server
#     (go test -tags redis).
#  2. A triplet greylisted on node A passes on node B after the delay.
#  3. A rate limit of 10/min is shared: of 11 messages sent to A and B
#     in turn, 10 are accepted and the 11th is deferred.
#  4. redis-server killed mid-run: greylisting fails open (a new
#     triplet passes), the rate limit fails closed (deferred), each
#     session is answered within a second, and the failures are logged.
#  5. redis-server back: a new triplet is greylisted again, with no
#     restart of the nodes.
# Installs redis-server and swaks with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v swaks >/dev/null || need+=(swaks)
if [ ${#need[@]} -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	for try in 1 2 3; do
		if apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; then break; fi
		echo "apt-get failed (try $try)"; sleep 5
	done
	# The package starts its own server on 6379: this test runs its own.
	systemctl disable --now redis-server >/dev/null 2>&1 || service redis-server stop >/dev/null 2>&1 || true
fi
for c in redis-server redis-cli swaks; do command -v $c >/dev/null || { echo "$c is required"; exit 1; }; done

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/larkpost" ./cmd/larkpost

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 100); do "$@" 2>/dev/null && return 0; sleep 0.1; done; echo "timed out: $*"; return 1; }
rport=$(free_port) a=$(free_port) b=$(free_port)

start_redis() {
	setsid redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
		> "$work/redis.log" 2>&1 &
	redis_pid=$!
	pids+=($redis_pid)
	wait_for redis-cli -p "$rport" ping > /dev/null
}
start_redis

passed=0 failed=0
ok()   { echo "PASS: $1"; passed=$((passed+1)); }
fail() { echo "FAIL: $1"; failed=$((failed+1)); }

# 1. The store's own suite against the real server.
if LARKPOST_REDIS="redis://127.0.0.1:$rport/1" go test -count=1 -tags redis -run Real ./engine/state/ > "$work/gotest.txt" 2>&1; then
	ok "engine/state suite against redis-server $(redis-server --version | grep -o 'v=[0-9.]*')"
else
	fail "engine/state suite against redis-server"; cat "$work/gotest.txt"
fi

for node in a b; do
	port=${!node}
	cat > "$work/$node.star" <<STAR
config(
    allow_root = True,   # these runs are about shared state, not the root split (.ci/privs.sh)
    hostname = "mx$node.state.test",
    destinations = ["state.test"],
    data_dir = "$work/data-$node",
    networks = ["192.0.2.0/24"],   # loopback is an outside client here
    resolvers = [],
    listen = {"smtp": "127.0.0.1:$port"},
    state_store = "redis://127.0.0.1:$rport/0",
    state_store_timeout = "500ms",
    greylist_fail_mode = "open",
    ratelimit_fail_mode = "closed",
)

def on_mail(tx, sender):
    if sender.local == "bulk":
        r = ratelimit.take("bulk", rate = "10/min")
        if not r:
            return defer("4.7.0 rate limited, retry in %d s" % r.retry_after)

def on_rcpt(tx, rcpt):
    if rcpt.user == "grey":
        return greylist.check(tx.conn.ip, tx.sender, rcpt, delay = "2s")
STAR
	"$work/larkpost" check -c "$work/$node.star" > /dev/null
	setsid "$work/larkpost" serve -c "$work/$node.star" 2> "$work/$node.log" &
	pids+=($!)
	wait_for grep -q "listening on" "$work/$node.log"
done

# send PORT FROM TO: the last server reply line of one swaks session.
send() {
	swaks --server 127.0.0.1 --port "$1" --from "$2" --to "$3" --helo client.example \
		--header "Subject: state test" --timeout 10 > "$work/swaks.txt" 2>&1 || true
	grep -E '^<[-~*]* *[0-9]{3}' "$work/swaks.txt" | tail -1 || true
}
rcpt_reply() { grep -A1 -E '^ -> RCPT TO' "$work/swaks.txt" | grep -E '^<' | head -1 || true; }

# 2. Greylisted on A, passed on B after the delay.
send "$a" ann@example.org grey@state.test > /dev/null
first=$(rcpt_reply)
send "$b" ann@example.org grey@state.test > /dev/null
early=$(rcpt_reply)
sleep 2.2
send "$b" ann@example.org grey@state.test > /dev/null
if [[ $first == *"450 4.7.1 Greylisted"* && $early == *"450"* ]] && grep -q "250 2.0.0 Ok: queued" "$work/swaks.txt"; then
	ok "greylisted on node A ($first), passed on node B after the delay"
else
	fail "greylist across nodes: first='$first' early='$early'"; cat "$work/swaks.txt"
fi

# 3. 10/min across both nodes.
accepted=0 deferred=0
for i in $(seq 11); do
	port=$a
	[ $((i % 2)) = 0 ] && port=$b
	reply=$(send "$port" bulk@example.org alice@state.test)
	if grep -q "250 2.0.0 Ok: queued" "$work/swaks.txt"; then
		accepted=$((accepted+1))
	elif grep -q "4.7.0 rate limited" "$work/swaks.txt"; then
		deferred=$((deferred+1))
	fi
done
if [ "$accepted" = 10 ] && [ "$deferred" = 1 ]; then
	ok "rate limit 10/min shared by both nodes: 10 accepted, the 11th deferred"
else
	fail "shared rate limit: $accepted accepted, $deferred deferred (want 10 and 1)"
fi

# 4. Redis killed: greylist fails open, ratelimit fails closed.
kill -9 "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
t0=$(date +%s%N)
send "$a" new@example.org grey@state.test > /dev/null
open=$(rcpt_reply)
send "$b" bulk@example.org alice@state.test > /dev/null
closed=$(grep -E '^<[-~*]* *4' "$work/swaks.txt" | head -1 || true)
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
if [[ $open == *"250"* ]]; then ok "redis down: greylisting fails open ($open)"; else fail "redis down, greylist: '$open'"; fi
if [[ $closed == *"4.7.0 rate limited"* ]]; then ok "redis down: the rate limit fails closed ($closed)"; else fail "redis down, ratelimit: '$closed'"; fi
if [ "$ms" -lt 5000 ]; then ok "two sessions with redis down answered in ${ms} ms"; else fail "sessions with redis down took ${ms} ms"; fi
# Each line is written before its reply; the wait is for a slow machine.
logged() { grep -q "warning: greylist: .*state store unavailable" "$work/a.log" && grep -q "warning: ratelimit: .*state store unavailable" "$work/b.log"; }
for _ in $(seq 30); do logged && break; sleep 0.1; done
if logged; then
	ok "each failure is logged: $(grep -m1 'warning: greylist' "$work/a.log" | sed 's/^.*warning/warning/')"
else
	fail "failures logged"; tail -n 20 "$work/a.log" "$work/b.log"
fi

# 5. Redis back: the nodes recover by themselves.
start_redis
send "$a" other@example.org grey@state.test > /dev/null
back=$(rcpt_reply)
if [[ $back == *"450 4.7.1 Greylisted"* ]]; then ok "redis back: a new triplet is greylisted again ($back)"; else fail "redis back: '$back'"; fi

echo "interop-state: $passed passed, $failed failed"
[ "$failed" = 0 ]
