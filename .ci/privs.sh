#!/usr/bin/env bash
# Privileges, black box: a real `larkpost serve` started as root, split
# into a root parent and a daemon running as mail_owner; two real users
# made with useradd, mail to their home Maildirs, and the .forward attacks
# of issue 14 tried as those users would. Needs root (CI runs as
# root); refuses to run otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "privs.sh needs root"; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }

users=(lpann lpbob)
work=$(mktemp -d)
chmod 755 "$work"
cleanup() {
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	for u in "${users[@]}"; do userdel -r "$u" >/dev/null 2>&1 || true; done
	userdel lpmail >/dev/null 2>&1 || true
	[ -n "${KEEP:-}" ] || rm -rf "$work"
}
pid=
trap cleanup EXIT
for u in "${users[@]}"; do
	userdel -r "$u" >/dev/null 2>&1 || true
	useradd --create-home --home-dir "$work/home/$u" --shell /bin/sh "$u"
	# Private homes: the daemon (mail_owner) cannot look inside.
	chmod 700 "$work/home/$u"
done
userdel lpmail >/dev/null 2>&1 || true
useradd --system --no-create-home --shell /usr/sbin/nologin lpmail
mkdir -p "$work/secret" && chmod 700 "$work/secret"
printf 'ssh-ed25519 AAAA root@host\n' > "$work/secret/authorized_keys"
printf 'leaked-secret-line@evil.test\n' > "$work/secret/shadow"
chmod 600 "$work/secret/"*
keys_before=$(stat -c '%s %Y' "$work/secret/authorized_keys")

go build -o "$work/larkpost" ./cmd/larkpost
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/larkpost.star" <<STAR
config(
    listen = {"smtp": "127.0.0.1:$port"},
    data_dir = "$work/data",
    hostname = "mx.privs.test",
    mailbox_path = "$work/home/{user}/Maildir/",
    forward_path = "$work/home/{user}/.forward",
    filter_path = "$work/home/{user}/.larkpost.star",
    # Budgets loose enough for a memory bomb to get going: the child's
    # address-space limit is what stops it.
    filter_max_steps = 1000000000,
    filter_timeout = "30s",
    notify_classes = [],
    mail_owner = "lpmail",
    resolvers = [],
)
STAR
"$work/larkpost" check -c "$work/larkpost.star"
start() {
	"$work/larkpost" serve -c "$work/larkpost.star" 2>> "$work/serve.log" &
	pid=$!
	for _ in $(seq 50); do [ "$(grep -c "listening on smtp" "$work/serve.log")" -ge "$1" ] && break; sleep 0.1; done
}
start 1

passed=0 failed=0
check() { # name, then a command that must succeed
	local name=$1; shift
	if "$@"; then echo "PASS: $name"; passed=$((passed + 1)); else echo "FAIL: $name"; failed=$((failed + 1)); fi
}
send() { # to, subject
	python3 - "$port" "$1" "$2" <<'PY'
import smtplib, sys
port, to, subject = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
    s.sendmail("outsider@example.org", [to], f"Subject: {subject}\r\n\r\nbody\r\n")
PY
}
wait_log() { # pattern
	for _ in $(seq 50); do grep -q -- "$1" "$work/serve.log" && return 0; sleep 0.1; done
	return 1
}
owned_0600() { # user, dir: every message file is the user's, mode 600
	local f n=0
	for f in "$2"/new/*; do
		[ -e "$f" ] || return 1
		[ "$(stat -c '%U %a' "$f")" = "$1 600" ] || { echo "  $f: $(stat -c '%U %a' "$f")"; return 1; }
		n=$((n + 1))
	done
	[ "$n" -gt 0 ]
}

daemon_uid() {
	local d
	d=$(sed -n 's/.*started the daemon \([0-9]*\) as lpmail.*/\1/p' "$work/serve.log" | head -1)
	[ -n "$d" ] && awk '/^Uid:/ {print $3}' "/proc/$d/status"
}
check "the SMTP daemon runs as mail_owner, not root" test "$(daemon_uid)" = "$(id -u lpmail)"
check "the parent that started it is root" test "$(awk '/^Uid:/ {print $3}' "/proc/$pid/status")" = 0
check "data_dir belongs to mail_owner" test "$(stat -c %U "$work/data")" = lpmail

for u in "${users[@]}"; do
	send "$u@mx.privs.test" "hello $u"
	wait_log "to=<$u@mx.privs.test>, relay=local, .*status=sent" || true
	check "$u's mail is in ~$u/Maildir, owned by $u, mode 600" owned_0600 "$u" "$work/home/$u/Maildir"
done

# lpann names a root-only file in her .forward.
su lpann -c "printf '%s\n' '$work/secret/authorized_keys' > ~/.forward && chmod 644 ~/.forward"
send lpann@mx.privs.test "attack one"
wait_log "relay=file, .*status=deferred" || true
check "a .forward naming a root-only file changes nothing" \
	test "$(stat -c '%s %Y' "$work/secret/authorized_keys")" = "$keys_before"
check "the file target was deferred" grep -q "relay=file, .*status=deferred" "$work/serve.log"

# lpbob's .forward is a symlink to a root-only file.
su lpbob -c "ln -s '$work/secret/shadow' ~/.forward"
send lpbob@mx.privs.test "attack two"
wait_log "lpbob/.forward: ignored" || true
check "a .forward symlink to a root-only file is ignored with a warning" grep -q "lpbob/.forward: ignored: .*permission denied" "$work/serve.log"
check "the root-only file's contents leak nowhere" bash -c "! grep -rqs leaked-secret-line '$work/serve.log' '$work/home' '$work/data'"

# lpann's .forward pipe writes the uid it runs with.
su lpann -c "rm -f ~/.forward && printf '%s\n' '\"|{ id -u; echo \$HOME; pwd; } > $work/home/lpann/uid\"' > ~/.forward && chmod 644 ~/.forward"
send lpann@mx.privs.test "pipe"
for _ in $(seq 50); do [ "$(wc -l < "$work/home/lpann/uid" 2>/dev/null)" = 3 ] && break; sleep 0.1; done
check "a .forward pipe runs with the user's uid" test "$(sed -n 1p "$work/home/lpann/uid" 2>/dev/null)" = "$(id -u lpann)"
check "a .forward pipe has the user's HOME, and runs in it" test "$(sed -n '2,3p' "$work/home/lpann/uid" 2>/dev/null | tr '\n' ' ')" = "$work/home/lpann $work/home/lpann "

# lpbob's filter is a memory bomb the script budget does not count (many
# small objects): the filter child's address-space limit kills it, and the
# mail lands in the inbox.
su lpbob -c "rm -f ~/.forward; printf 'def file(msg):\n    d = {}\n    for i in range(100000000):\n        d[i] = [i, i, i]\n' > ~/.larkpost.star"
before=$(ls "$work/home/lpbob/Maildir/new" | wc -l)
send lpbob@mx.privs.test "bomb"
wait_log "to=<lpbob@mx.privs.test>: filter failed, filed to INBOX: .*out of memory" || true
check "a filter's memory bomb is stopped by its limit" grep -q "to=<lpbob@mx.privs.test>: filter failed, filed to INBOX: .*out of memory" "$work/serve.log"
check "the bombed message is in lpbob's inbox" test "$(ls "$work/home/lpbob/Maildir/new" | wc -l)" -gt "$before"
check "the daemon survived the bomb" kill -0 "$(sed -n 's/.*started the daemon \([0-9]*\) as lpmail.*/\1/p' "$work/serve.log" | tail -1)"
su lpbob -c "printf 'def file(msg):\n    if \"filed\" in msg.header(\"Subject\"):\n        return \"Filed\"\n' > ~/.larkpost.star"
send lpbob@mx.privs.test "filed by lpbob's filter"
wait_log "to=<lpbob@mx.privs.test>, relay=local, .*Maildir/.Filed" || true
check "lpbob's filter, run as lpbob, files into a folder he owns" owned_0600 lpbob "$work/home/lpbob/Maildir/.Filed"

# kill -9 of a delivery child: lpann's pipe blocks the first time; killed,
# the recipient is deferred, and the retry delivers.
su lpann -c "printf '%s\n' '\"|if [ -e $work/home/lpann/once ]; then id -u > $work/home/lpann/retried; else touch $work/home/lpann/once; sleep 60; fi\"' > ~/.forward"
send lpann@mx.privs.test "killed child"
for _ in $(seq 50); do pgrep -u lpann sleep >/dev/null && break; sleep 0.1; done
pkill -9 -u lpann || true
wait_log "relay=local, .*status=deferred (command died with signal 9" || true
check "kill -9 of a delivery child defers" grep -q "status=deferred (command died with signal 9" "$work/serve.log"
"$work/larkpost" queue flush --all -c "$work/larkpost.star" >/dev/null
for _ in $(seq 100); do [ -s "$work/home/lpann/retried" ] && break; sleep 0.1; done
check "the deferred delivery succeeds on retry, as lpann" test "$(cat "$work/home/lpann/retried" 2>/dev/null)" = "$(id -u lpann)"

# kill -9 of the daemon loses no acknowledged message: 20 messages to
# lpbob acknowledged, the daemon killed at once, the server started
# again; every one of them reaches lpbob.
su lpbob -c "rm -f ~/.larkpost.star"
python3 - "$port" <<'PY'
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
    for i in range(20):
        s.sendmail("outsider@example.org", ["lpbob@mx.privs.test"], f"Subject: acked {i}\r\n\r\nbody\r\n")
PY
kill -9 "$(sed -n 's/.*started the daemon \([0-9]*\) as lpmail.*/\1/p' "$work/serve.log" | tail -1)"
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
check "the root parent ends when its daemon dies" bash -c "! kill -0 $pid 2>/dev/null"
start 2
acked() { grep -l "^Subject: acked" "$work/home/lpbob/Maildir/new/"* 2>/dev/null | xargs -r grep -h "^Subject: acked" | sort -u | wc -l; }
for _ in $(seq 100); do [ "$(acked)" -ge 20 ] && break; sleep 0.1; done
check "kill -9 of the daemon loses none of 20 acknowledged messages ($(acked) delivered)" test "$(acked)" -ge 20

# Stopping the server while a user's command runs: the command is killed
# (the delivery deferred), not left behind as an orphan of the user.
su lpbob -c "printf '%s\n' '\"|sleep 300\"' > ~/.forward"
send lpbob@mx.privs.test "long command"
for _ in $(seq 50); do pgrep -u lpbob -f "sleep 300" >/dev/null && break; sleep 0.1; done
kill "$pid"
for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
check "SIGTERM stops the split server (within the 30 s grace)" bash -c "! kill -0 $pid 2>/dev/null"
check "no command of the user outlives the server" bash -c "! pgrep -u lpbob -f 'sleep 300'"

echo "privs: $passed passed, $failed failed"
if [ "$failed" -gt 0 ]; then
	echo "--- serve.log"; cat "$work/serve.log"
	exit 1
fi
