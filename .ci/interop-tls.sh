#!/usr/bin/env bash
# Interop, TLS on the server: a real `larkpost serve` with STARTTLS on a
# plain listener, a submission listener that requires TLS and an
# implicit-TLS listener, against swaks, Python's smtplib and ssl, and
# openssl s_client. Certificates are made here with openssl. Installs
# what is missing with apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v swaks >/dev/null || need+=(swaks)
command -v openssl >/dev/null || need+=(openssl)
perl -MIO::Socket::SSL -e1 2>/dev/null || need+=(libio-socket-ssl-perl libnet-ssleay-perl)
if [ ${#need[@]} -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	for try in 1 2 3; do
		if apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; then break; fi
		echo "apt-get failed (try $try)"; sleep 5
	done
fi
for c in swaks openssl python3; do command -v $c >/dev/null || { echo "$c is required"; exit 1; }; done

work=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || { kill $pid 2>/dev/null; wait $pid 2>/dev/null; }; rm -rf "$work"' EXIT
go build -o "$work/larkpost" ./cmd/larkpost

# A CA and a certificate for mx.tls.test, as an admin would have them.
certs=$work/certs
mkdir -p "$certs"
issue() { # name -> $certs/name.crt (leaf + CA), $certs/name.key
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
		-keyout "$certs/$1.key" -out "$certs/$1.csr" 2>/dev/null
	printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$1" > "$certs/$1.ext"
	openssl x509 -req -in "$certs/$1.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" -CAcreateserial \
		-days 30 -extfile "$certs/$1.ext" -out "$certs/$1.leaf" 2>/dev/null
	cat "$certs/$1.leaf" "$certs/ca.crt" > "$certs/$1.crt"
}
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=Interop CA" -days 30 \
	-keyout "$certs/ca.key" -out "$certs/ca.crt" 2>/dev/null
issue mx.tls.test

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
smtp=$(free_port) sub=$(free_port) smtps=$(free_port)
cat > "$work/larkpost.star" <<STAR
config(
    allow_root = True,   # these runs are about TLS, not the root split (.ci/privs.sh)
    hostname = "mx.tls.test",
    data_dir = "$work/data",
    networks = ["192.0.2.0/24"],   # loopback is an outside client here
    resolvers = [],
    smtpd_tls_cert_file = "$certs/mx.tls.test.crt",
    smtpd_tls_key_file = "$certs/mx.tls.test.key",
    listen = {
        "smtp": "127.0.0.1:$smtp",
        "submission": {"addr": "127.0.0.1:$sub", "tls_security_level": "encrypt"},
        "smtps": {"addr": "127.0.0.1:$smtps", "tls_wrappermode": True},
    },
)
STAR
"$work/larkpost" check -c "$work/larkpost.star"
"$work/larkpost" serve -c "$work/larkpost.star" 2> "$work/serve.log" &
pid=$!
for _ in $(seq 50); do [ "$(grep -c "listening on" "$work/serve.log")" -ge 3 ] && break; sleep 0.1; done

passed=0 failed=0
ok()   { echo "PASS: $1"; passed=$((passed+1)); }
fail() { echo "FAIL: $1"; failed=$((failed+1)); }
count() { ls "$work/data/mail/$1/new" 2>/dev/null | wc -l; }
wait_count() { for _ in $(seq 100); do [ "$(count "$1")" -ge "$2" ] && return 0; sleep 0.05; done; return 1; }
last() { ls -t "$work/data/mail/$1/new/"* | head -1; }

# 1. swaks with STARTTLS on port 25 (opportunistic listener).
if swaks --server 127.0.0.1:$smtp --tls --tls-verify --tls-ca-path "$certs/ca.crt" --tls-sni mx.tls.test \
	--from ann@example.org --to alice@mx.tls.test --header "Subject: swaks starttls" > "$work/s1.txt" 2>&1 \
	&& wait_count alice 1 && grep -q "with ESMTPS id" "$(last alice)" \
	&& grep -q "(using TLSv1.3 with cipher" "$(last alice)"; then
	ok "swaks --tls: STARTTLS, verified, Received says ESMTPS and the cipher"
else
	fail "swaks --tls"; cat "$work/s1.txt"
fi

# 2. swaks with implicit TLS (port 465).
if swaks --server 127.0.0.1:$smtps --tlsc --tls-verify --tls-ca-path "$certs/ca.crt" --tls-sni mx.tls.test \
	--from ann@example.org --to alice@mx.tls.test --header "Subject: swaks smtps" > "$work/s2.txt" 2>&1 \
	&& wait_count alice 2 && grep -q "with ESMTPS id" "$(last alice)"; then
	ok "swaks --tlsc: implicit TLS"
else
	fail "swaks --tlsc"; cat "$work/s2.txt"
fi

# 3. The submission listener requires TLS.
if ! swaks --server 127.0.0.1:$sub --from ann@example.org --to alice@mx.tls.test > "$work/s3.txt" 2>&1 \
	&& grep -q "530 5.7.0 Must issue a STARTTLS command first" "$work/s3.txt"; then
	ok "tls_security_level = encrypt refuses MAIL before STARTTLS"
else
	fail "encrypt level"; cat "$work/s3.txt"
fi

# 4. Python: smtplib.starttls() with verification, SMTP_SSL, and the
#    plaintext command pipelined after STARTTLS (CVE-2011-0411).
if python3 - "$smtp" "$smtps" "$certs/ca.crt" > "$work/py.txt" 2>&1 <<'PY'
import smtplib, socket, ssl, sys
smtp, smtps, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
with smtplib.SMTP("127.0.0.1", smtp) as s:
    s._host = "mx.tls.test"  # the name verified against the certificate
    s.starttls(context=ctx)
    assert s.sock.version() == "TLSv1.3", s.sock.version()
    s.sendmail("ann@example.org", ["bob@mx.tls.test"], "Subject: smtplib starttls\r\n\r\nhi\r\n")
class SSL(smtplib.SMTP_SSL):
    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout)
        return self.context.wrap_socket(sock, server_hostname="mx.tls.test")
with SSL("127.0.0.1", smtps, context=ctx) as s:
    s.sendmail("ann@example.org", ["bob@mx.tls.test"], "Subject: smtplib ssl\r\n\r\nhi\r\n")
# Injection: STARTTLS and a command in one plaintext write.
raw = socket.create_connection(("127.0.0.1", smtp), timeout=10)
f = raw.makefile("rb")
f.readline()
raw.sendall(b"EHLO py.test\r\n")
while not f.readline().startswith(b"250 "):
    pass
raw.sendall(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n")
line = f.readline()
assert line.startswith(b"220"), line
tls = ctx.wrap_socket(raw, server_hostname="mx.tls.test")
tls.sendall(b"EHLO py.test\r\n")
reply = tls.recv(4096)
assert reply.startswith(b"554 5.5.1 Error: improper command pipelining after STARTTLS"), reply
print("python ok")
PY
then ok "python smtplib starttls + SMTP_SSL, injection refused"; else fail "python"; cat "$work/py.txt"; fi

# 5. openssl s_client sees the certificate over STARTTLS and it verifies.
if echo QUIT | timeout 10 openssl s_client -starttls smtp -connect 127.0.0.1:$smtp -servername mx.tls.test \
	-CAfile "$certs/ca.crt" -verify_return_error > "$work/o1.txt" 2>&1 \
	&& grep -q "subject=CN *= *mx.tls.test" "$work/o1.txt" && grep -q "Verify return code: 0 (ok)" "$work/o1.txt"; then
	ok "openssl s_client -starttls smtp: certificate verified"
else
	fail "openssl s_client"; cat "$work/o1.txt"
fi

# 6. A renewed certificate is served without a restart (new serial).
serial() {
	echo QUIT | timeout 10 openssl s_client -starttls smtp -connect 127.0.0.1:$smtp -servername mx.tls.test 2>/dev/null |
		openssl x509 -noout -serial
}
before=$(serial)
issue mx.tls.test
sleep 6  # handshakes look at the files at most every 5 s
after=$(serial)
if [ -n "$before" ] && [ "$before" != "$after" ] && grep -q "TLS certificates reloaded: mx.tls.test" "$work/serve.log"; then
	ok "certificate renewal picked up without a restart"
else
	fail "certificate renewal ($before -> $after)"
fi

if wait_count bob 2 && grep -q "Anonymous TLS connection established from localhost\[127.0.0.1\]: TLSv1.3" "$work/serve.log"; then
	ok "smtplib mail delivered; TLS logged as Postfix does"
else
	fail "smtplib delivery or TLS log line"
fi

kill -TERM $pid
wait $pid || true
pid=
if [ $failed -ne 0 ]; then echo "--- server log"; cat "$work/serve.log"; fi
echo "interop-tls: $passed passed, $failed failed"
[ $failed -eq 0 ]
