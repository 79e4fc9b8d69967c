#!/usr/bin/env bash
# Interop, DKIM: a real `larkpost serve` signs what its networks send
# with an RSA and an Ed25519 key made by `larkpost dkim keygen`, and
# Python's dkimpy (Debian's python3-dkim, an independent implementation)
# verifies both signatures against the records keygen printed, and sees
# a tampered copy fail. The other way round, messages signed by dkimpy
# verify in larkpost's dkim.verify (through `larkpost trace --dns`), and
# DMARC aligns on them. Installs what is missing with apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=/usr/bin/python3 # Debian's, where python3-dkim is installed
if ! $PY -c 'import dkim, nacl' 2>/dev/null; then
	export DEBIAN_FRONTEND=noninteractive
	for try in 1 2 3; do
		if apt-get update -qq && apt-get install -y -qq python3-dkim python3-nacl >/dev/null; then break; fi
		echo "apt-get failed (try $try)"; sleep 5
	done
fi
$PY -c 'import dkim, nacl' || { echo "python3-dkim and python3-nacl are required"; exit 1; }

work=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || { kill $pid 2>/dev/null; wait $pid 2>/dev/null; }; rm -rf "$work"' EXIT
go build -o "$work/larkpost" ./cmd/larkpost

passed=0 failed=0
ok()   { echo "PASS: $1"; passed=$((passed+1)); }
fail() { echo "FAIL: $1"; failed=$((failed+1)); }

# Keys, as an admin makes them; the record is the quoted strings joined.
record() { sed -n '/IN TXT/,$p' "$1" | sed -n 's/[^"]*"\([^"]*\)".*/\1/p' | tr -d '\n'; }
"$work/larkpost" dkim keygen -o "$work/rsa.key" example.com rsa2026 > "$work/rsa.txt"
"$work/larkpost" dkim keygen --algorithm ed25519 -o "$work/ed.key" example.com ed2026 > "$work/ed.txt"
rsa_txt=$(record "$work/rsa.txt") ed_txt=$(record "$work/ed.txt")
case $rsa_txt in "v=DKIM1; k=rsa; p="*) ok "dkim keygen prints an RSA record" ;; *) fail "dkim keygen RSA record: $rsa_txt" ;; esac
case $ed_txt in "v=DKIM1; k=ed25519; p="*) ok "dkim keygen prints an Ed25519 record" ;; *) fail "dkim keygen Ed25519 record: $ed_txt" ;; esac

port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/larkpost.star" <<STAR
config(
    allow_root = True,   # these runs are about DKIM, not the root split (.ci/privs.sh)
    listen = {"smtp": "127.0.0.1:$port"},
    data_dir = "$work/data",
    hostname = "mx.example.com",
    destinations = ["mx.example.com"],
    networks = ["127.0.0.0/8"],
    resolvers = [],
    dkim_keys = [
        {"domain": "example.com", "selector": "rsa2026", "key_file": "$work/rsa.key"},
        {"domain": "example.com", "selector": "ed2026", "key_file": "$work/ed.key"},
    ],
)
STAR
"$work/larkpost" check -c "$work/larkpost.star"
"$work/larkpost" serve -c "$work/larkpost.star" 2> "$work/serve.log" &
pid=$!
for _ in $(seq 50); do grep -q "listening on smtp" "$work/serve.log" && break; sleep 0.1; done

# Three messages through SMTP: a plain one, one with folded and repeated
# header fields, odd white space and non-ASCII text, and one of 2 MB (it
# goes through the queue's body file, not memory).
if $PY - "$port" "$work/data/mail/alice/new" "$rsa_txt" "$ed_txt" > "$work/py.txt" 2>&1 <<'PY'
import glob, os, smtplib, sys, time
import dkim
port, maildir, rsa_txt, ed_txt = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
records = {b"rsa2026._domainkey.example.com.": rsa_txt.encode(), b"ed2026._domainkey.example.com.": ed_txt.encode()}
def dnsfunc(name, timeout=5):
    return records.get(name if name.endswith(b".") else name + b".", b"")
def verifies(data, idx):
    try:
        return dkim.DKIM(data).verify(idx=idx, dnsfunc=dnsfunc)
    except dkim.DKIMException as e:  # dkimpy raises for some failures (body hash)
        print("dkimpy:", e)
        return False
def check(cond, what, detail=""):
    print(("PASS: " if cond else "FAIL: ") + what + ("" if cond or not detail else " -- " + str(detail)[:400]))
msgs = {
    "plain": "From: Ann <ann@example.com>\r\nTo: alice@mx.example.com\r\nSubject: plain\r\nMessage-ID: <plain@example.com>\r\n\r\nHello.\r\n",
    "awkward": ("From: \"Ann, Example\" <ann@example.com>\r\nTo: alice@mx.example.com,\r\n\tbob@mx.example.com\r\n"
                "Subject:   =?utf-8?q?caf=C3=A9?=   and   spaces \r\nTo: carol@mx.example.com\r\n"
                "Message-ID: <awkward@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                "X-Unsigned: yes\r\n\r\ncaf\u00e9  with   spaces \t\r\n\r\n\r\ntrailing blank lines\r\n\r\n\r\n"),
    "large": "From: ann@example.com\r\nTo: alice@mx.example.com\r\nSubject: large\r\nMessage-ID: <large@example.com>\r\n\r\n"
             + ("0123456789abcdef" * 4 + "\r\n") * 30000,
}
with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.com", timeout=30) as s:
    for name, body in msgs.items():
        s.sendmail("ann@example.com", ["alice@mx.example.com"], body.encode("utf-8"))
found = {}
for _ in range(200):
    for f in glob.glob(os.path.join(maildir, "*")):
        data = open(f, "rb").read()
        for name in msgs:
            if ("<%s@example.com>" % name).encode() in data:
                found[name] = data
    if len(found) == len(msgs):
        break
    time.sleep(0.05)
check(len(found) == len(msgs), "three signed messages delivered", sorted(found))
for name, data in sorted(found.items()):
    # Maildir files have LF line ends; SMTP carries CRLF, as signed.
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    d = dkim.DKIM(data)
    fields = [v for k, v in d.headers if k.lower() == b"dkim-signature"]
    check(len(fields) == 2, "%s: two DKIM-Signature fields (RSA and Ed25519)" % name, len(fields))
    sigs = list(range(len(fields)))  # dkimpy's idx counts signatures, not header fields
    for idx in sigs:
        v = verifies(data, idx)
        tags = dict(t.strip().split(b"=", 1) for t in fields[idx].split(b";") if b"=" in t)
        check(v, "%s: dkimpy verifies the %s signature (s=%s)" % (name, tags.get(b"a", b"?").decode(), tags.get(b"s", b"?").decode()), fields[idx])
    tampered = data.replace(b"\r\n\r\n", b"\r\n\r\nX", 1)
    check(not verifies(tampered, sigs[0]), "%s: a changed body fails in dkimpy" % name)
    forged = b"From: Mallory <mallory@example.com>\r\n" + data
    check(not verifies(forged, sigs[0]), "%s: a second From added on top fails (From is oversigned)" % name)
print("python done")
PY
then :; fi
while IFS= read -r line; do
	case $line in "PASS: "*) ok "${line#PASS: }" ;; "FAIL: "*) fail "${line#FAIL: }" ;; esac
done < "$work/py.txt"
grep -qx "python done" "$work/py.txt" || { fail "python dkim checks ran to the end"; grep -Ev '^(PASS|FAIL): ' "$work/py.txt" | tail -n 30; }
if grep -q "dkim: signed (d=example.com s=rsa2026 a=rsa-sha256, d=example.com s=ed2026 a=ed25519-sha256)" "$work/serve.log"; then
	ok "the signatures are logged"
else
	fail "the signatures are logged"; tail -20 "$work/serve.log"
fi

# The other way: dkimpy signs, larkpost's dkim.verify and dmarc.check judge.
$PY - "$work" <<'PY'
import sys, dkim
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives import serialization
import base64
work = sys.argv[1]
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
pub = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
msg = (b"From: Bob <bob@partner.example>\r\nTo: alice@mx.example.com\r\nSubject: signed by dkimpy\r\n"
       b"Message-ID: <py@partner.example>\r\n\r\nHello from dkimpy.\r\n")
for canon, name in ((b"relaxed", "relaxed"), (b"simple", "simple")):
    sig = dkim.sign(msg, b"py1", b"partner.example", pem, canonicalize=(canon, canon),
                    include_headers=[b"from", b"to", b"subject", b"message-id"])
    open("%s/py-%s.eml" % (work, name), "wb").write(sig + msg)
    open("%s/py-%s-tampered.eml" % (work, name), "wb").write(sig + msg.replace(b"Hello", b"Hullo"))
open("%s/dns.json" % work, "w").write(
    '{"py1._domainkey.partner.example": {"TXT": "v=DKIM1; k=rsa; p=%s"}, "_dmarc.partner.example": {"TXT": "v=DMARC1; p=reject"}}'
    % base64.b64encode(pub).decode())
PY
cat > "$work/verify.star" <<'STAR'
config(hostname = "mx.example.com", destinations = ["mx.example.com"], resolvers = [])
def on_data(tx, msg):
    d = dmarc.check(msg, spf = spf.check(tx.conn.ip, tx.conn.helo, tx.sender), dkim = dkim.verify(msg))
    if d.result != "pass":
        return reject("dmarc " + d.result)
STAR
for c in relaxed simple; do
	out=$("$work/larkpost" trace -c "$work/verify.star" --dns "$work/dns.json" --client-ip 203.0.113.1 \
		--from bob@partner.example --to alice@mx.example.com "$work/py-$c.eml" 2>&1 || true)
	if grep -q "dkim=pass" <<<"$out" && grep -q "dmarc=pass" <<<"$out" && grep -q "250 queued" <<<"$out"; then
		ok "larkpost verifies a dkimpy signature ($c/$c) and DMARC aligns"
	else
		fail "larkpost verifies a dkimpy signature ($c/$c)"; echo "$out"
	fi
	out=$("$work/larkpost" trace -c "$work/verify.star" --dns "$work/dns.json" --client-ip 203.0.113.1 \
		--from bob@partner.example --to alice@mx.example.com "$work/py-$c-tampered.eml" 2>&1 || true)
	if grep -q "dkim=fail" <<<"$out" && grep -q "reject 550" <<<"$out"; then
		ok "larkpost fails a tampered dkimpy-signed message ($c/$c)"
	else
		fail "larkpost fails a tampered dkimpy-signed message ($c/$c)"; echo "$out"
	fi
done

echo "interop-dkim: $passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
