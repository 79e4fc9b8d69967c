#!/usr/bin/env bash
# Interop: a real `larkpost serve` process talking to real SMTP clients
# (swaks, Python's smtplib). Installs swaks with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v swaks >/dev/null; then
	export DEBIAN_FRONTEND=noninteractive
	for try in 1 2 3; do
		if apt-get update -qq && apt-get install -y -qq swaks >/dev/null; then break; fi
		echo "apt-get failed (try $try)"; sleep 5
	done
fi
command -v swaks >/dev/null || { echo "swaks could not be installed"; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }

work=$(mktemp -d)
trap '[ -z "$pid" ] || { kill $pid 2>/dev/null; wait $pid 2>/dev/null; }; rm -rf "$work"' EXIT
go build -o "$work/larkpost" ./cmd/larkpost
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/larkpost.star" <<STAR
config(
    allow_root = True,   # these runs are about SMTP, not the root split (.ci/privs.sh)
    listen = {"smtp": "127.0.0.1:$port"},
    data_dir = "$work/data",
    hostname = "mx.interop.test",
    networks = ["192.0.2.0/24"],   # loopback is an outside client here
    recipient_delimiter = "+",
    resolvers = [],
)

def on_data(tx, msg):
    if "reject me" in msg.subject:
        return reject("content refused by policy", code = 554, status = "5.7.1")
STAR
"$work/larkpost" check -c "$work/larkpost.star"
"$work/larkpost" serve -c "$work/larkpost.star" 2> "$work/serve.log" &
pid=$!
for _ in $(seq 50); do grep -q "listening on smtp" "$work/serve.log" && break; sleep 0.1; done

passed=0 failed=0
# Delivery runs from the queue after the 250: wait for a file to appear.
wait_for() { for _ in $(seq 100); do compgen -G "$1" >/dev/null && return 0; sleep 0.05; done; return 1; }
ok()   { echo "PASS: $1"; passed=$((passed+1)); }
fail() { echo "FAIL: $1"; failed=$((failed+1)); }

# 1. swaks delivers a message with pipelining; it lands in the Maildir byte-exact.
if swaks --server 127.0.0.1:$port --pipeline --helo client.interop.test --from ann@example.org \
	--to alice+lists@mx.interop.test --header "Subject: swaks interop" --body "hello from swaks" > "$work/swaks1.txt" 2>&1 \
	&& wait_for "$work/data/mail/alice/new/*" \
	&& grep -q "hello from swaks" "$work"/data/mail/alice/new/* \
	&& grep -q "^Delivered-To: alice+lists@mx.interop.test" "$work"/data/mail/alice/new/*; then
	ok "swaks delivery to Maildir"
else
	fail "swaks delivery to Maildir"; cat "$work/swaks1.txt"
fi

# 2. relaying from outside networks is refused with Postfix's reply.
if ! swaks --server 127.0.0.1:$port --from ann@example.org --to someone@elsewhere.example > "$work/swaks2.txt" 2>&1 \
	&& grep -q "554 5.7.1 <someone@elsewhere.example>: Relay access denied" "$work/swaks2.txt"; then
	ok "relay denied"
else
	fail "relay denied"; cat "$work/swaks2.txt"
fi

# 3. an on_data reject reaches the client.
if ! swaks --server 127.0.0.1:$port --from ann@example.org --to bob@mx.interop.test \
	--header "Subject: please reject me" > "$work/swaks3.txt" 2>&1 \
	&& grep -q "554 5.7.1 content refused by policy" "$work/swaks3.txt"; then
	ok "on_data reject"
else
	fail "on_data reject"; cat "$work/swaks3.txt"
fi

# 4. Python smtplib: SMTPUTF8 addresses and a bare RCPT TO:<postmaster>.
if python3 - "$port" "$work/data" > "$work/py.txt" 2>&1 <<'PY'
import glob, smtplib, sys, time
port, data = int(sys.argv[1]), sys.argv[2]
def wait(pattern):
    for _ in range(100):
        if glob.glob(pattern):
            return True
        time.sleep(0.05)
    return False
with smtplib.SMTP("127.0.0.1", port) as s:
    s.ehlo("py.interop.test")
    s.sendmail("jörg@example.org", ["jörg@mx.interop.test"],
               "Subject: utf8\r\n\r\ngrüße\r\n".encode(), mail_options=["SMTPUTF8"])
    code, msg = s.docmd("MAIL FROM:<ann@example.org>")
    assert code == 250, (code, msg)
    code, msg = s.docmd("RCPT TO:<postmaster>")
    assert code == 250, (code, msg)
    code, msg = s.data(b"Subject: to postmaster\r\n\r\nhi\r\n")
    assert code == 250, (code, msg)
assert wait(data + "/mail/jörg/new/*"), "utf8 mailbox empty"
assert wait(data + "/mail/postmaster/new/*"), "postmaster mailbox empty"
print("smtplib ok")
PY
then ok "python smtplib SMTPUTF8 and postmaster"; else fail "python smtplib"; cat "$work/py.txt"; fi

# 5. SIGTERM: a clean exit.
kill -TERM $pid
if wait $pid; then ok "SIGTERM exits 0"; else fail "SIGTERM exit status"; fi
pid=

if [ $failed -ne 0 ]; then echo "--- server log"; cat "$work/serve.log"; fi
echo "interop: $passed passed, $failed failed"
[ $failed -eq 0 ]
