#!/usr/bin/env bash
# Interop, logging: `larkpost serve` with log_target = "syslog" writes to
# Debian's rsyslogd (run as users run it: its own config, imuxsock on a
# socket of ours, the traditional file format), and the log is read by
# the tools that read Postfix's.
#
# What is checked:
#  1. The lines reach rsyslogd with facility mail and Postfix's program
#     names: larkpost/smtpd, larkpost/cleanup, larkpost/qmgr,
#     larkpost/local, larkpost/master.
#  2. fail2ban-regex with Debian's /etc/fail2ban/filter.d/postfix.conf
#     (filter postfix[_daemon=larkpost/\w+]) matches the lines of each
#     rejected RCPT (a hook's 554 5.7.1 and a relay attempt): as many as
#     were sent.
#  3. The same with syslog_name = "postfix" and the stock filter, no
#     override.
#  4. pflogsumm --syslog-name=larkpost counts the messages received,
#     delivered and rejected.
#  5. log_target = "journald": the native protocol against Debian's
#     systemd-journald, run in a journald namespace of its own (no system
#     journal runs without systemd as PID 1): TestRealJournald writes,
#     journalctl reads the fields back, fail2ban-regex reads its
#     -o short output. (serve writes to the system journal's socket, so
#     this part uses the test; TestJournald checks the same format on a
#     socket of its own everywhere.)
# Installs rsyslog, fail2ban, pflogsumm and swaks with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v rsyslogd >/dev/null || need+=(rsyslog)
command -v fail2ban-regex >/dev/null || need+=(fail2ban)
command -v pflogsumm >/dev/null || need+=(pflogsumm)
command -v swaks >/dev/null || need+=(swaks)
if [ ${#need[@]} -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	for try in 1 2 3; do
		if apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; then break; fi
		echo "apt-get failed (try $try)"; sleep 5
	done
	# The packages may start their own daemons: this test runs its own.
	for s in rsyslog fail2ban; do
		systemctl disable --now $s >/dev/null 2>&1 || service $s stop >/dev/null 2>&1 || true
	done
fi
for c in rsyslogd fail2ban-regex pflogsumm swaks python3; do command -v $c >/dev/null || { echo "$c is required"; exit 1; }; done
[ -f /etc/fail2ban/filter.d/postfix.conf ] || { echo "/etc/fail2ban/filter.d/postfix.conf is required"; exit 1; }

work=$(mktemp -d)
chmod 755 "$work"
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

passed=0 failed=0
ok()   { echo "PASS: $1"; passed=$((passed+1)); }
fail() { echo "FAIL: $1"; failed=$((failed+1)); }

# rsyslogd as users run it, but on our socket and files: mail.* in the
# traditional format (RSYSLOG_TraditionalFileFormat, what Debian's
# /var/log/mail.log has), one file per syslog_name.
cat > "$work/rsyslog.conf" <<CONF
global(workDirectory="$work")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="$work/log.sock" CreatePath="on" RateLimit.Interval="0")
module(load="builtin:omfile" Template="RSYSLOG_TraditionalFileFormat")
if \$syslogfacility-text == "mail" and \$programname startswith "postfix" then {
    action(type="omfile" file="$work/postfix.log")
    stop
}
if \$syslogfacility-text == "mail" then action(type="omfile" file="$work/mail.log")
if \$syslogfacility-text != "mail" then action(type="omfile" file="$work/other.log")
CONF
rsyslogd -N1 -f "$work/rsyslog.conf" > "$work/rsyslog-check.txt" 2>&1 || { cat "$work/rsyslog-check.txt"; exit 1; }
setsid rsyslogd -n -f "$work/rsyslog.conf" -i "$work/rsyslogd.pid" > "$work/rsyslogd.out" 2>&1 &
pids+=($!)
wait_for test -S "$work/log.sock"
echo "rsyslogd $(rsyslogd -v | head -1 | grep -o '[0-9][0-9.]*' | head -1) on $work/log.sock"

# serve NAME: a server with syslog_name NAME logging to rsyslogd; sets
# $port. A hook rejects RCPT TO blocked@ with 554 5.7.1; loopback is an
# outside client (networks), so mail for other domains is a relay attempt.
serve() {
	local name=$1
	port=$(free_port)
	cat > "$work/$name.star" <<STAR
config(
    allow_root = True,   # about the log, not the root split (.ci/privs.sh)
    hostname = "mx.logs.test",
    destinations = ["logs.test", "mx.logs.test"],
    data_dir = "$work/data-$name",
    networks = ["192.0.2.0/24"],   # loopback is an outside client here
    resolvers = [],
    listen = {"smtp": "127.0.0.1:$port"},
    log_target = "syslog",
    syslog_socket = "$work/log.sock",
    syslog_name = "$name",
    syslog_facility = "mail",
)

def on_rcpt(tx, rcpt):
    print("rcpt", rcpt)   # the policy's logger goes to syslog as well
    if rcpt.user == "blocked":
        return reject("<%s>: Recipient address rejected: Service unavailable" % rcpt, code = 554, status = "5.7.1")
STAR
	"$work/larkpost" check -c "$work/$name.star" > /dev/null
	setsid "$work/larkpost" serve -c "$work/$name.star" > "$work/$name.stderr" 2>&1 &
	pids+=($!)
	serve_pid=$!
}

# send FROM TO: one swaks session; its transcript in $work/swaks.txt.
send() {
	swaks --server 127.0.0.1 --port "$port" --from "$1" --to "$2" --helo client.example \
		--header "Subject: log test" --timeout 10 > "$work/swaks.txt" 2>&1 || true
}

# mail NAME LOG: the same traffic for each server: 2 messages delivered
# locally, 2 rejected RCPTs (the hook, a relay attempt).
mail() {
	local name=$1 log=$2
	wait_for grep -q "$name/master\[[0-9]*\]: listening on smtp" "$log"
	send ann@example.org alice@logs.test
	send ann@example.org bob@logs.test
	send ann@example.org blocked@logs.test
	grep -q '554 5.7.1 <blocked@logs.test>: Recipient address rejected' "$work/swaks.txt" || { cat "$work/swaks.txt"; return 1; }
	send ann@example.org x@elsewhere.example
	grep -q '554 5.7.1 <x@elsewhere.example>: Relay access denied' "$work/swaks.txt" || { cat "$work/swaks.txt"; return 1; }
	wait_for test "$(grep -c "$name/local\[[0-9]*\]: .*status=sent" "$log")" = 2
	wait_for test "$(grep -c "$name/qmgr\[[0-9]*\]: [0-9A-Z]*: removed" "$log")" = 2
}

# matched LOG FILTER: the lines fail2ban-regex matches.
matched() {
	fail2ban-regex --print-all-matched "$1" "$2" > "$work/f2b.txt" 2>&1 || { cat "$work/f2b.txt"; return 1; }
	sed -n 's/^Lines: .* \([0-9][0-9]*\) matched.*/\1/p' "$work/f2b.txt"
}

# 1. larkpost's own name.
serve larkpost
mail larkpost "$work/mail.log"
echo "-- $work/mail.log (the first lines):"
head -12 "$work/mail.log" | sed 's/^/   /'
progs=$(grep -o ' larkpost/[a-z]*\[' "$work/mail.log" | sort -u | tr -d ' [' | tr '\n' ' ')
if [[ $progs == *larkpost/cleanup* && $progs == *larkpost/local* && $progs == *larkpost/master* && $progs == *larkpost/qmgr* && $progs == *larkpost/smtpd* ]] &&
	grep -qE '^[A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8} \S+ larkpost/smtpd\[[0-9]+\]: connect from localhost\[127\.0\.0\.1\]$' "$work/mail.log"; then
	ok "rsyslogd wrote mail.* lines with Postfix's program names: $progs"
else
	fail "program names in mail.log: $progs"; cat "$work/mail.log"
fi
if grep -q "larkpost/master\[[0-9]*\]: script: rcpt alice@logs.test hook=on_rcpt" "$work/mail.log" && ! grep -q "script:" "$work/larkpost.stderr"; then
	ok "the policy's lines (print() in a hook) follow the switch to syslog: $(grep -m1 "script: rcpt" "$work/mail.log" | sed "s/^.* larkpost\//larkpost\//")"
else
	fail "script: lines in mail.log"; cat "$work/larkpost.stderr"
fi
if [ ! -s "$work/other.log" ] || ! grep -q larkpost "$work/other.log"; then
	ok "every line has facility mail (none in the other facilities' file)"
else
	fail "lines with another facility"; cat "$work/other.log"
fi

# 2. fail2ban: Debian's postfix filter, its _daemon for our syslog_name.
# Its stock _daemon, postfix(-\w+)?/\w+(?:/smtp[ds])?, only knows
# Postfix's names: a jail says filter = postfix[_daemon=larkpost/\w+].
stock=$(matched "$work/mail.log" /etc/fail2ban/filter.d/postfix.conf)
n=$(matched "$work/mail.log" 'postfix[_daemon=larkpost/\w+]')
if [ "$n" = 2 ] && [ "$(grep -c 'larkpost/smtpd\[[0-9]*\]: NOQUEUE: reject: RCPT from localhost\[127.0.0.1\]: 554 5.7.1' "$work/f2b.txt")" = 2 ]; then
	ok "fail2ban $(fail2ban-regex --version | awk '{ print $NF; exit }') filter postfix[_daemon=larkpost/\w+] matches the 2 rejected RCPTs of 127.0.0.1 (the stock filter, for Postfix's names: $stock)"
	grep 'NOQUEUE: reject' "$work/f2b.txt" | sed 's/^ *|* */   /'
else
	fail "fail2ban postfix[_daemon=larkpost/\w+]: $n matched, want 2"; cat "$work/f2b.txt"
fi
n=$(matched "$work/mail.log" 'postfix[_daemon=larkpost/\w+, mode=aggressive]')
if [ "$n" = 2 ]; then
	ok "fail2ban postfix[_daemon=larkpost/\w+, mode=aggressive] matches the same 2 lines"
else
	fail "fail2ban mode=aggressive: $n matched, want 2"; cat "$work/f2b.txt"
fi

# 4. pflogsumm: the grand totals.
pflogsumm --syslog-name=larkpost "$work/mail.log" > "$work/pflogsumm.txt" 2>&1
totals=$(sed -n '/^Grand Totals/,/^Per-/p' "$work/pflogsumm.txt")
count() { awk -v what="$1" '$2 == what { print $1; exit }' <<< "$totals"; }
echo "-- pflogsumm --syslog-name=larkpost, Grand Totals:"
sed -n '/^messages/,/discarded/p' <<< "$totals" | sed 's/^/   /'
if [ "$(count received)" = 2 ] && [ "$(count delivered)" = 2 ] && [ "$(count rejected)" = 2 ]; then
	ok "pflogsumm --syslog-name=larkpost: 2 received, 2 delivered, 2 rejected"
else
	fail "pflogsumm totals: received $(count received), delivered $(count delivered), rejected $(count rejected) (want 2, 2, 2)"; cat "$work/pflogsumm.txt"
fi
if grep -q 'Relay access denied' "$work/pflogsumm.txt" && grep -q 'Recipient address rejected' "$work/pflogsumm.txt"; then
	ok "pflogsumm's reject detail names both reasons"
else
	fail "pflogsumm's reject detail"; cat "$work/pflogsumm.txt"
fi
kill -- -"$serve_pid"; wait "$serve_pid" 2>/dev/null || true

# 3. syslog_name = "postfix": the stock filter as it is.
serve postfix
mail postfix "$work/postfix.log"
n=$(matched "$work/postfix.log" /etc/fail2ban/filter.d/postfix.conf)
if [ "$n" = 2 ]; then
	ok "syslog_name = \"postfix\": the stock /etc/fail2ban/filter.d/postfix.conf matches the 2 rejected RCPTs"
else
	fail "stock fail2ban filter with syslog_name postfix: $n matched, want 2"; cat "$work/f2b.txt"
fi
if [ "$(pflogsumm "$work/postfix.log" | awk '$2 == "received" { print $1; exit }')" = 2 ]; then
	ok "syslog_name = \"postfix\": pflogsumm without --syslog-name counts 2 received"
else
	fail "pflogsumm with syslog_name postfix"; pflogsumm "$work/postfix.log" | head -30
fi
kill -- -"$serve_pid"; wait "$serve_pid" 2>/dev/null || true

# 5. journald: without systemd as PID 1 no system journal runs, but
# systemd-journald runs in a namespace of its own (its sockets in
# /run/systemd/journal.NS/): TestRealJournald writes to it, journalctl
# reads the entries back.
journald=$(command -v systemd-journald || ls /lib/systemd/systemd-journald 2>/dev/null || true)
if [ -n "$journald" ] && command -v journalctl >/dev/null && [ -s /etc/machine-id ] && [ "$(id -u)" = 0 ]; then
	ns=larkpost-ci-$$
	jcleanup() { rm -rf "/run/systemd/journal.$ns" /run/log/journal/*."$ns" /var/log/journal/*."$ns"; }
	trap 'cleanup; jcleanup' EXIT
	setsid "$journald" "$ns" > "$work/journald.out" 2>&1 &
	pids+=($!)
	wait_for test -S "/run/systemd/journal.$ns/socket"
	run=$RANDOM$RANDOM
	if LARKPOST_JOURNAL_SOCKET="/run/systemd/journal.$ns/socket" LARKPOST_JOURNAL_RUN=$run \
		go test -count=1 -run TestRealJournald -v ./engine/maillog/ > "$work/gotest.txt" 2>&1 &&
		grep -q -- '--- PASS: TestRealJournald' "$work/gotest.txt"; then
		sleep 0.5
		journalctl --namespace="$ns" --no-pager -o json CI_RUN="$run" > "$work/journal.json" 2>&1 || true
		if python3 - "$work/journal.json" "$run" <<'PY'
import json, sys
es = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
# the attribute ci_run is in the text too, as any attribute
got = [(e["SYSLOG_IDENTIFIER"], e["PRIORITY"], e["SYSLOG_FACILITY"], e.get("QUEUE_ID"), e["MESSAGE"].replace(" ci_run=" + sys.argv[2], "")) for e in es]
want = [("larkpost/smtpd", "6", "2", None, "connect from localhost[127.0.0.1]"),
        ("larkpost/smtpd", "6", "2", None, "NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 554 5.7.1 <x@elsewhere.example>: Relay access denied; from=<ann@example.org> to=<x@elsewhere.example> proto=ESMTP helo=<client.example>"),
        ("larkpost/qmgr", "6", "2", "1K1T5CJN8WM00", "1K1T5CJN8WM00: from=<ann@example.org>, size=405, nrcpt=1 (queue active)"),
        ("larkpost/master", "4", "2", None, "warning: script: two\\012lines source=a\\012b")]
ok = got == want and es[3].get("SOURCE") == "a\nb" and all(e["SYSLOG_PID"] == es[0]["SYSLOG_PID"] for e in es)
if not ok:
    print("got:", *got, "want:", *want, sep="\n  ")
sys.exit(0 if ok else 1)
PY
		then
			ok "systemd-journald ($(journalctl --version | head -1)) in namespace $ns: 4 entries with SYSLOG_IDENTIFIER larkpost/smtpd, larkpost/qmgr, larkpost/master, PRIORITY, SYSLOG_FACILITY 2, QUEUE_ID, a multi-line field"
		else
			fail "journal entries"; cat "$work/journal.json"
		fi
		journalctl --namespace="$ns" --no-pager -o short CI_RUN="$run" > "$work/journal.log" 2>&1 || true
		n=$(matched "$work/journal.log" 'postfix[_daemon=larkpost/\w+]')
		if [ "$n" = 1 ]; then
			ok "fail2ban postfix[_daemon=larkpost/\w+] matches the reject in journalctl -o short output"
		else
			fail "fail2ban on the journal: $n matched, want 1"; cat "$work/journal.log" "$work/f2b.txt"
		fi
	else
		fail "TestRealJournald against systemd-journald"; cat "$work/gotest.txt" "$work/journald.out"
	fi
else
	echo "SKIP: log_target = \"journald\": no systemd-journald to run here; TestJournald in engine/maillog checks the native protocol on a socket of its own"
fi

echo "interop-logs: $passed passed, $failed failed"
[ "$failed" = 0 ]
