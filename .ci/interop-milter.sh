#!/usr/bin/env bash
# Interop, milters: Debian's OpenDKIM as a milter of a real `larkpost
# serve` (smtpd_milters) signs mail from the networks; Python's dkimpy
# verifies the signature OpenDKIM added through larkpost, and so does
# larkpost's own dkim.verify (`larkpost trace --dns`) on the way back in;
# Debian's rspamd (its proxy worker's milter) rejects GTUBE and adds its
# X-Spam headers to other mail, and a hook's milter.check gets its
# verdict; OpenDKIM as a non_smtpd_milter signs mail from larkpost's
# sendmail; with the milter down, milter_default_action tempfail
# answers 421.
# Installs what is missing with apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=/usr/bin/python3
need=()
command -v opendkim >/dev/null || need+=(opendkim)
command -v rspamd >/dev/null || need+=(rspamd)
$PY -c 'import dkim, nacl' 2>/dev/null || need+=(python3-dkim python3-nacl)
if [ ${#need[@]} -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	for try in 1 2 3; do
		if apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; then break; fi
		echo "apt-get failed (try $try)"; sleep 5
	done
fi
for c in opendkim rspamd; do command -v $c >/dev/null || { echo "$c is required"; exit 1; }; done

work=$(mktemp -d)
pids=()
headers_conf=/etc/rspamd/local.d/milter_headers.conf
restore() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	# Gone before their directory is: a server whose queue directory
	# vanishes while it closes retries its last write.
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ -f "$work/milter_headers.conf.orig" ]; then cp "$work/milter_headers.conf.orig" "$headers_conf"; else rm -f "$headers_conf"; fi
	rm -rf "$work"
}
trap restore EXIT
go build -o "$work/larkpost" ./cmd/larkpost

passed=0 failed=0
ok()   { echo "PASS: $1"; passed=$((passed+1)); }
fail() { echo "FAIL: $1"; failed=$((failed+1)); }
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 100); do "$@" && return 0; sleep 0.1; done; return 1; }
record() { sed -n '/IN TXT/,$p' "$1" | sed -n 's/[^"]*"\([^"]*\)".*/\1/p' | tr -d '\n'; }

# OpenDKIM as an admin runs it beside Postfix: sign for example.com, mail
# from 127.0.0.1 is internal. The key comes from `larkpost dkim keygen`.
"$work/larkpost" dkim keygen -o "$work/s1.key" example.com s1 > "$work/s1.txt"
txt=$(record "$work/s1.txt")
odport=$(free_port)
cat > "$work/opendkim.conf" <<CONF
Syslog no
Mode sv
Socket inet:$odport@127.0.0.1
Domain example.com
Selector s1
KeyFile $work/s1.key
RequireSafeKeys false
InternalHosts 127.0.0.1
Canonicalization relaxed/relaxed
Background no
PidFile $work/opendkim.pid
UserID root
CONF
opendkim -f -x "$work/opendkim.conf" > "$work/opendkim.log" 2>&1 &
pids+=($!)
wait_for eval "ss -ltnH 'sport = :$odport' | grep -q ." || { cat "$work/opendkim.log"; echo "opendkim did not start"; exit 1; }

port=$(free_port) downport=$(free_port) dead=$(free_port)
cat > "$work/larkpost.star" <<STAR
config(
    allow_root = True,   # these runs are about milters, not the root split (.ci/privs.sh)
    listen = {"smtp": "127.0.0.1:$port"},
    data_dir = "$work/data",
    hostname = "mx.example.com",
    destinations = ["mx.example.com"],
    networks = ["127.0.0.0/8"],
    resolvers = [],
    smtpd_milters = ["inet:127.0.0.1:$odport"],
    non_smtpd_milters = ["inet:127.0.0.1:$odport"],
)
STAR
sed -e "s/127.0.0.1:$port/127.0.0.1:$downport/; s/127.0.0.1:$odport/127.0.0.1:$dead/; s#$work/data#$work/data-down#" \
	"$work/larkpost.star" > "$work/down.star"
for c in larkpost down; do
	"$work/larkpost" check -c "$work/$c.star" >/dev/null
	"$work/larkpost" serve -c "$work/$c.star" 2> "$work/$c.log" &
	pids+=($!)
	wait_for grep -q "listening on smtp" "$work/$c.log" || { cat "$work/$c.log"; exit 1; }
done

if $PY - "$port" "$work/data/mail/alice/new" "$txt" "$work/signed.eml" > "$work/py.txt" 2>&1 <<'PY'
import glob, os, smtplib, sys, time
import dkim
port, maildir, txt, out = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode(), sys.argv[4]
msg = (b"From: Ann <ann@example.com>\r\nTo: alice@mx.example.com\r\nSubject: signed by opendkim through larkpost\r\n"
       b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <od1@example.com>\r\n\r\nHello through a milter.\r\n")
with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.com", timeout=30) as s:
    s.sendmail("ann@example.com", ["alice@mx.example.com"], msg)
data = None
for _ in range(100):
    files = glob.glob(os.path.join(maildir, "*"))
    if files:
        data = open(files[0], "rb").read()
        break
    time.sleep(0.1)
if data is None:
    print("FAIL: the message was not delivered"); sys.exit(0)
data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
print(("PASS" if b"DKIM-Signature:" in data and b"d=example.com" in data and b"s=s1" in data else "FAIL")
      + ": OpenDKIM's DKIM-Signature (d=example.com s=s1) was added through larkpost's milter client")
try:
    good = dkim.verify(data, dnsfunc=lambda name, timeout=5: txt)
except dkim.DKIMException as e:
    good = False; print("dkimpy:", e)
print(("PASS" if good else "FAIL") + ": dkimpy verifies the signature OpenDKIM made through larkpost")
open(out, "wb").write(data)
print("python done")
PY
then :; fi
while IFS= read -r line; do
	case $line in "PASS: "*) ok "${line#PASS: }" ;; "FAIL: "*) fail "${line#FAIL: }" ;; esac
done < "$work/py.txt"
grep -qx "python done" "$work/py.txt" || { fail "python checks ran to the end"; cat "$work/py.txt"; }
grep -q "milter" "$work/opendkim.log" 2>/dev/null || true

# non_smtpd_milters: a message from larkpost's sendmail is signed by
# OpenDKIM too, on its way through pickup.
printf 'From: Ann <ann@example.com>\r\nTo: bob@mx.example.com\r\nSubject: from sendmail\r\n\r\nSigned at pickup.\r\n' |
	"$work/larkpost" sendmail -c "$work/larkpost.star" -f ann@example.com bob@mx.example.com
if $PY - "$work/data/mail/bob/new" "$txt" > "$work/py2.txt" 2>&1 <<'PY'
import glob, os, sys, time
import dkim
maildir, txt = sys.argv[1], sys.argv[2].encode()
data = None
for _ in range(100):
    files = glob.glob(os.path.join(maildir, "*"))
    if files:
        data = open(files[0], "rb").read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        break
    time.sleep(0.1)
good = data is not None and b"DKIM-Signature:" in data and dkim.verify(data, dnsfunc=lambda name, timeout=5: txt)
print(("PASS" if good else "FAIL") + ": a message from sendmail is signed by OpenDKIM as a non_smtpd_milter, and dkimpy verifies it")
PY
then :; fi
while IFS= read -r line; do
	case $line in "PASS: "*) ok "${line#PASS: }" ;; "FAIL: "*) fail "${line#FAIL: }"; cat "$work/py2.txt"; tail -5 "$work/larkpost.log" ;; esac
done < "$work/py2.txt"
grep -q "^PASS\|^FAIL" "$work/py2.txt" || { fail "sendmail through non_smtpd_milters"; cat "$work/py2.txt"; }

# On the way back in: larkpost's own dkim.verify checks what OpenDKIM signed.
printf '{"s1._domainkey.example.com": {"TXT": "%s"}}\n' "$txt" > "$work/dns.json"
cat > "$work/verify.star" <<'STAR'
config(hostname = "mx.example.org", destinations = ["mx.example.com"], resolvers = [])
def on_data(tx, msg):
    sigs = [s for s in dkim.verify(msg) if s.result == "pass" and s.domain == "example.com"]
    if not sigs:
        return reject("no valid example.com signature")
STAR
out=$("$work/larkpost" trace -c "$work/verify.star" --dns "$work/dns.json" --client-ip 203.0.113.1 \
	--from ann@example.com --to alice@mx.example.com "$work/signed.eml" 2>&1 || true)
if grep -q "250 queued" <<<"$out" && grep -q "dkim=pass" <<<"$out"; then
	ok "larkpost's dkim.verify passes OpenDKIM's signature on the way back in"
else
	fail "larkpost's dkim.verify passes OpenDKIM's signature"; echo "$out"
fi

# The milter down: milter_default_action = tempfail answers at connect.
reply=$($PY -c "
import smtplib, sys
try:
    smtplib.SMTP('127.0.0.1', $downport, timeout=10)
    print('connected')
except smtplib.SMTPConnectError as e:
    print(e.smtp_code, e.smtp_error.decode())
")
case $reply in
"421 4.7.1"*) ok "milter down: $reply" ;;
*) fail "milter down: got '$reply', want 421 4.7.1"; tail -5 "$work/down.log" ;;
esac

# rspamd, started as Debian's unit does, with its verdict headers on for
# every client (the default skips local ones); the config is put back on
# exit.
[ -f "$headers_conf" ] && cp "$headers_conf" "$work/milter_headers.conf.orig"
printf 'use = ["x-spamd-result", "x-spam-status"];\nskip_local = false;\nskip_authenticated = false;\n' > "$headers_conf"
if ss -ltnH 'sport = :11332' | grep -q .; then
	fail "rspamd: 127.0.0.1:11332 is taken by another program"
else
	rspamd -f -u root -g root > "$work/rspamd.log" 2>&1 &
	pids+=($!)
	# rspamd compiles its rules before it listens: 10 s on an idle CI
	# machine is not always enough on a busy one.
	started=0
	for _ in $(seq 600); do ss -ltnH 'sport = :11332' | grep -q . && { started=1; break; }; sleep 0.1; done
	if [ "$started" = 1 ]; then
		rport=$(free_port)
		sed -e "s/127.0.0.1:$port/127.0.0.1:$rport/; s/127.0.0.1:$odport/127.0.0.1:11332/; s#$work/data#$work/data-rspamd#; s/networks = \[\"127.0.0.0\/8\"\]/networks = [\"192.0.2.0\/24\"]/" \
			"$work/larkpost.star" > "$work/rspamd.star"
		"$work/larkpost" serve -c "$work/rspamd.star" 2> "$work/rspamd-larkpost.log" &
		pids+=($!)
		wait_for grep -q "listening on smtp" "$work/rspamd-larkpost.log" || cat "$work/rspamd-larkpost.log"
		out=$($PY - "$rport" <<'PY'
import smtplib, sys
port = int(sys.argv[1])
for subj, body in (("gtube", b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"), ("ham", b"Hello, how are you?\r\n")):
    msg = b"From: ann@example.org\r\nTo: alice@mx.example.com\r\nSubject: " + subj.encode() + b"\r\nMessage-ID: <" + subj.encode() + b"@example.org>\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\n" + body
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.org", timeout=60) as s:
            s.sendmail("ann@example.org", ["alice@mx.example.com"], msg)
        print(subj, "250")
    except smtplib.SMTPDataError as e:
        print(subj, e.smtp_code, e.smtp_error.decode())
PY
)
		if grep -q "^gtube 554 5.7.1 Gtube pattern" <<<"$out"; then ok "rspamd rejects GTUBE: ${out%%$'\n'*}"; else fail "rspamd rejects GTUBE: $out"; fi
		found() { grep -lqs "^X-Spam-Status: No" "$work"/data-rspamd/mail/alice/new/*; }
		if grep -q "^ham 250" <<<"$out" && wait_for found; then
			ok "rspamd's X-Spam-Status and X-Spamd-Result headers reach the delivered message: $(grep -h '^X-Spam-Status' "$work"/data-rspamd/mail/alice/new/*)"
		else
			fail "rspamd headers in the delivered message ($out)"; tail -5 "$work/rspamd-larkpost.log"
		fi
		if grep -q "reject: END-OF-MESSAGE from .*: 554 5.7.1 Gtube pattern" "$work/rspamd-larkpost.log"; then
			ok "the GTUBE reject is logged as Postfix does"
		else
			fail "the GTUBE reject is logged"
		fi
		# milter.check from a hook: rspamd's verdict as one input of a
		# script, with no smtpd_milters configured.
		hport=$(free_port)
		cat > "$work/hook.star" <<STAR
config(allow_root = True, listen = {"smtp": "127.0.0.1:$hport"}, data_dir = "$work/data-hook",
    hostname = "mx.example.com", destinations = ["mx.example.com"], resolvers = [])
def on_data(tx, msg):
    r = milter.check("inet:127.0.0.1:11332", msg, tx)
    if r.action == "reject":
        return reject("rspamd via milter.check: " + r.text)
STAR
		"$work/larkpost" serve -c "$work/hook.star" 2> "$work/hook-larkpost.log" &
		pids+=($!)
		wait_for grep -q "listening on smtp" "$work/hook-larkpost.log" || cat "$work/hook-larkpost.log"
		out=$($PY - "$hport" <<'PY'
import smtplib, sys
msg = b"From: ann@example.org\r\nTo: alice@mx.example.com\r\nSubject: gtube\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
try:
    with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="client.example.org", timeout=60) as s:
        s.sendmail("ann@example.org", ["alice@mx.example.com"], msg)
    print("250")
except smtplib.SMTPDataError as e:
    print(e.smtp_code, e.smtp_error.decode())
PY
)
		if grep -q "^550 5.7.1 rspamd via milter.check: Gtube pattern" <<<"$out"; then
			ok "milter.check from a hook gets rspamd's verdict: $out"
		else
			fail "milter.check from a hook: $out"; tail -5 "$work/hook-larkpost.log"
		fi
	else
		fail "rspamd did not start"; tail -20 "$work/rspamd.log"
	fi
fi

echo "interop-milter: $passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
