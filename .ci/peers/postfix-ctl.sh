#!/usr/bin/env bash
# postfix-ctl.sh start|stop|status
#
# Starts/stops the system's Postfix, as set up by postfix-setup.sh, for
# larkpost's CI interop test (.ci/interop-peers.sh), and checks that it
# listens on loopback addresses only. Every wait is bounded.
#   start    start it and wait (max 30 s) until 127.0.0.1:$POSTFIX_PORT listens
#   stop     stop it (postfix stop) and wait (max 20 s) until it is gone
#   status   print whether it runs; exit 0 if it does, 3 if not
#
# Adapted from the project's MTA bench scripts (peers-ctl.sh with
# peers.d/postfix.sh), reduced to the Postfix peer and these three actions.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=postfix.env
. "$HERE/postfix.env"

die() { printf 'postfix-ctl: %s\n' "$*" >&2; exit 1; }

[ $# = 1 ] || { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

listening() { [ -n "$(ss -ltnH "sport = :$POSTFIX_PORT" 2>/dev/null)" ]; }

postfix_pid() { # pid of the master process while it runs, nothing otherwise
	local pid
	[ -r /var/spool/postfix/pid/master.pid ] || return 0
	pid=$(tr -d ' \n' </var/spool/postfix/pid/master.pid)
	# master -t exits non-zero while the master holds its pid-file lock
	/usr/lib/postfix/sbin/master -t 2>/dev/null || printf '%s\n' "$pid"
}

tree_pids() { # ROOT: ROOT and all its descendants
	ps -e -o pid=,ppid= | awk -v root="$1" '
		{ parent[$1] = $2 }
		END { for (p in parent) { q = p; while (q != root && q > 1 && (q in parent)) q = parent[q]; if (q == root) print p } }'
}

non_loopback_listeners() { # PID: addresses outside loopback the process tree listens on
	local pids
	pids=$(tree_pids "$1" | paste -sd'|')
	ss -ltnupH 2>/dev/null | grep -E "pid=($pids)," | awk '{print $5}' |
		grep -vE '^(127\.[0-9.]+|\[::1\]|\[::ffff:127\.[0-9.]+\]):' | paste -sd' ' || true
}

do_start() {
	local bad
	install -d -m 755 "$LOG_DIR"
	if [ -n "$(postfix_pid)" ]; then
		echo "postfix already running (pid $(postfix_pid))"
		return 0
	fi
	if listening; then die "port $POSTFIX_PORT is already in use"; fi
	# What Debian's init script / systemd unit do: sync the chroot
	# (/etc/hosts, nsswitch.conf, resolv.conf, ...) and start the master.
	/usr/lib/postfix/configure-instance.sh - >/dev/null || die "configure-instance.sh failed"
	postfix start >/dev/null 2>&1 || die "postfix start failed (see $LOG_DIR/postfix.log)"
	for _ in $(seq 300); do
		listening && [ -n "$(postfix_pid)" ] && break
		sleep 0.1
	done
	if ! { listening && [ -n "$(postfix_pid)" ]; }; then
		die "postfix did not come up on 127.0.0.1:$POSTFIX_PORT within 30 s (see $LOG_DIR/postfix.log)"
	fi
	bad=$(non_loopback_listeners "$(postfix_pid)")
	if [ -n "$bad" ]; then
		do_stop >/dev/null || true
		die "postfix listens on non-loopback address(es): $bad (stopped it)"
	fi
	echo "postfix started (pid $(postfix_pid), 127.0.0.1:$POSTFIX_PORT)"
}

do_stop() {
	local pid
	pid=$(postfix_pid)
	if [ -z "$pid" ]; then
		echo "postfix not running"
		return 0
	fi
	postfix stop >/dev/null 2>&1 || true
	for _ in $(seq 200); do
		[ -z "$(postfix_pid)" ] && ! kill -0 "$pid" 2>/dev/null && ! listening && break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		die "postfix (pid $pid) did not stop within 20 s"
	fi
	echo "postfix stopped"
}

case "$1" in
start) do_start ;;
stop) do_stop ;;
status)
	pid=$(postfix_pid)
	if [ -n "$pid" ]; then echo "postfix running (pid $pid)"; else echo "postfix stopped"; exit 3; fi
	;;
*) die "unknown action '$1' (start|stop|status)" ;;
esac
