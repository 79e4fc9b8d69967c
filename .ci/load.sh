#!/usr/bin/env bash
# End-to-end load run beside Debian's Postfix: the same client
# (cmd/smtpload) sends to a real `larkpost serve` (started as root, so it
# splits into a root parent and a daemon running as mail_owner, as it is
# deployed) and to Postfix (.ci/peers/), both delivering bench.test to a
# Maildir, in alternating rounds. It prints delivered msgs/s (from the first
# connection to the last file in new/), the final dot's p50/p99, the ratio
# of each pair and larkpost's peak PSS, and fails when a message is refused
# or not delivered, when larkpost is slower than Postfix in every round of
# a load of 10 or more sessions (it was 2-4x as fast on the 2-core VM the
# numbers in docs/guide/performance.md come from; this is a floor, not the
# target),
# or when its peak PSS passes 128 MiB.
#
# Everything listens on 127.0.0.1; every run is bounded (smtpload -duration,
# bounded waits); the servers this script starts are stopped on exit. Must
# run as root (Postfix, the root split). ROUNDS (default 2) sets the rounds.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "FAIL: $*"; exit 1; }
# fail WHO MESSAGE: die, with the end of larkpost's log when it was larkpost.
fail() {
	if [ "$1" = larkpost ] && [ -s "$work/serve.log" ]; then
		echo "-- the end of larkpost's log:"; tail -20 "$work/serve.log"
	fi
	die "$1: $2"
}
[ "$(id -u)" = 0 ] || die "must run as root (Postfix, the root split)"
# shellcheck source=.ci/peers/postfix.env
. .ci/peers/postfix.env
rounds=${ROUNDS:-2}

if ! command -v postfix >/dev/null; then
	bash .ci/peers/postfix-setup.sh
else
	SKIP_APT_UPDATE=1 bash .ci/peers/postfix-setup.sh
fi
owner=lpload # the daemon's account, made here when missing
id "$owner" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$owner"

work=$(mktemp -d)
chmod 755 "$work" # the daemon (mail_owner) must reach its data_dir below it
lpid=
postfix_up=0
# stop_larkpost: SIGTERM, up to 40 s for the queue to close (it gives up
# on Badger after 30), then SIGKILL to it and its daemon.
stop_larkpost() {
	[ -n "$lpid" ] || return 0
	kill "$lpid" 2>/dev/null
	for _ in $(seq 400); do kill -0 "$lpid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$lpid" 2>/dev/null; then
		echo "larkpost did not stop within 40 s of SIGTERM: killed"
		pkill -KILL -P "$lpid"; kill -KILL "$lpid"
	fi
	wait "$lpid" 2>/dev/null
	lpid=
}
cleanup() {
	set +e
	stop_larkpost
	[ "$postfix_up" = 0 ] || timeout 30 bash .ci/peers/postfix-ctl.sh stop >/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/larkpost" ./cmd/larkpost
go build -o "$work/smtpload" ./cmd/smtpload
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pf_new="$(bench_maildir)/new"

count() { find "$1" -mindepth 1 -maxdepth 1 -type f | wc -l; }

# peak_pss PID: the largest PSS (kB) of PID and its children, sampled every
# 0.2 s into $work/pss until PID ends.
peak_pss() {
	local root=$1 best=0 now p
	while kill -0 "$root" 2>/dev/null; do
		now=0
		for p in $root $(pgrep -P "$root"); do
			now=$((now + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)))
		done
		[ "$now" -gt "$best" ] && best=$now && echo "$best" >"$work/pss"
		sleep 0.2
	done
}

# run WHO N C SIZE: one round; sets rate, lat and pss. WHO is larkpost or
# postfix; the server is started fresh and stopped after.
run() {
	local who=$1 n=$2 c=$3 size=$4 new addr t0 t1 got out sampler
	pss=-
	if [ "$who" = postfix ]; then
		find "$pf_new" "$(dirname "$pf_new")/cur" -mindepth 1 -maxdepth 1 -type f -delete
		bash .ci/peers/postfix-ctl.sh start >/dev/null
		postfix_up=1
		new=$pf_new addr=127.0.0.1:$POSTFIX_PORT
	else
		rm -rf "$work/data" && mkdir -p "$work/data/mail/$BENCH_USER/"{new,cur,tmp}
		cat >"$work/load.star" <<-STAR
			config(
			    hostname = "mx.bench.test",
			    destinations = ["$BENCH_DOMAIN"],
			    listen = {"smtp": "127.0.0.1:$port"},
			    data_dir = "$work/data",
			    mail_owner = "$owner",
			    resolvers = [],
			)
		STAR
		"$work/larkpost" serve -c "$work/load.star" 2>"$work/serve.log" &
		lpid=$!
		for _ in $(seq 100); do grep -q "listening on smtp" "$work/serve.log" && break; sleep 0.1; done
		grep -q "listening on smtp" "$work/serve.log" || { cat "$work/serve.log"; die "larkpost did not start"; }
		rm -f "$work/pss"
		peak_pss "$lpid" &
		sampler=$!
		new=$work/data/mail/$BENCH_USER/new addr=127.0.0.1:$port
	fi
	sleep 1
	t0=$(date +%s.%N)
	out=$("$work/smtpload" -n "$n" -c "$c" -s "$size" -to "$BENCH_USER@$BENCH_DOMAIN" -duration 100s "$addr" 2>&1) ||
		{ echo "$out"; fail "$who" "smtpload did not get every message accepted (n=$n c=$c s=$size)"; }
	for _ in $(seq 1200); do
		got=$(count "$new")
		[ "$got" -ge "$n" ] && break
		sleep 0.05
	done
	t1=$(date +%s.%N)
	[ "$got" -ge "$n" ] || fail "$who" "$got of $n messages delivered within 60 s of the last one accepted (n=$n c=$c s=$size)"
	grep -q "^Subject: smtpload message" "$(find "$new" -type f | head -1)" || fail "$who" "a delivered file is not the message sent"
	rate=$(python3 -c "print(f'{$n / ($t1 - $t0):.0f}')")
	lat=$(echo "$out" | grep -o 'p50=[0-9.]*ms p90=[0-9.]*ms p99=[0-9.]*ms' | head -1 | sed 's/ p90=[0-9.]*ms//')
	if [ "$who" = postfix ]; then
		for _ in $(seq 300); do postqueue -p 2>/dev/null | grep -q "Mail queue is empty" && break; sleep 0.1; done
		timeout 30 bash .ci/peers/postfix-ctl.sh stop >/dev/null
		postfix_up=0
	else
		stop_larkpost || true
		wait "$sampler" 2>/dev/null || true
		if [ -s "$work/pss" ]; then pss=$(($(cat "$work/pss") / 1024)); fi
	fi
}

failed=0
# A guard against a leak or a buffer that grows with the load, not the
# target: these loads peak at 40-65 MiB (daemon and root parent).
pss_max=128
# load N C SIZE: ROUNDS alternating pairs; fails the script (at the end)
# when no round has larkpost at least as fast as Postfix.
load() {
	local n=$1 c=$2 size=$3 i pf lp best=0
	for i in $(seq "$rounds"); do
		run postfix "$n" "$c" "$size"
		pf=$rate pf_lat=$lat
		run larkpost "$n" "$c" "$size"
		lp=$rate
		ratio=$(python3 -c "print(f'{$lp / $pf:.2f}')")
		printf 'load: %5d x %7d B, %2d sessions, round %d: Postfix %5s msgs/s (%s), larkpost %5s msgs/s (%s), %sx, larkpost peak PSS %s MiB\n' \
			"$n" "$size" "$c" "$i" "$pf" "$pf_lat" "$lp" "$lat" "$ratio" "$pss"
		python3 -c "import sys; sys.exit(0 if $lp >= $pf else 1)" && best=1
		if [ "$pss" != - ] && [ "$pss" -gt "$pss_max" ]; then
			echo "FAIL: larkpost's peak PSS $pss MiB is over $pss_max MiB ($n x $size B, $c sessions)"
			failed=$((failed + 1))
		fi
	done
	# One session is left out of the floor: there a message's time is
	# mostly one flush for either server, and on some disks Postfix's
	# came out about as fast (1.1x in one round on this VM's root disk).
	if [ "$best" = 0 ] && [ "$c" -gt 1 ]; then
		echo "FAIL: larkpost slower than Postfix in every round ($n x $size B, $c sessions)"
		failed=$((failed + 1))
	fi
}

echo "== end-to-end load beside Postfix (cmd/smtpload, delivered msgs/s, final dot to 250)"
load 1000 1 2048
load 3000 10 2048
load 3000 50 2048
load 200 10 1048576
[ "$failed" = 0 ] || exit 1
echo "load: every message accepted and delivered by both"
