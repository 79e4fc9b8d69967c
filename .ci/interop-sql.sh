#!/usr/bin/env bash
# Interop, SQL tables: pgsql: tables against a real PostgreSQL server.
# Starts a throwaway cluster as the postgres user in a temp dir, on
# 127.0.0.1 and a free port, with a virtual alias table and a transport
# table, then:
#  1. runs the pgsql-tagged Go tests (stdlib/maps/pgsql_real_test.go);
#  2. `larkpost map query` on the pgsql: files and on the settings that
#     name them finds what the database holds;
#  3. a live `larkpost serve` whose virtual_alias_maps and transport_maps
#     are those tables delivers a message to an alias into the target's
#     Maildir;
#  4. with PostgreSQL stopped, RCPT TO the alias gets a 4xx (Postfix's
#     451 4.3.0 Temporary lookup failure), not a 5xx, and the log says why;
#     and the configuration still loads (the server would start).
# Installs Debian's postgresql when initdb is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# initdb's real directory, where pg_ctl, psql and postgres are too (a
# link in PATH may stand alone).
find_initdb() {
	local i
	if i=$(command -v initdb 2>/dev/null); then readlink -f "$i"; return 0; fi
	ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1
}
if [ -z "$(find_initdb)" ]; then
	export DEBIAN_FRONTEND=noninteractive
	for try in 1 2 3; do
		if apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; then break; fi
		echo "apt-get failed (try $try)"; sleep 5
	done
fi
initdb=$(find_initdb)
[ -n "$initdb" ] || { echo "initdb is required"; exit 1; }
bin=$(dirname "$initdb")
command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }
id postgres >/dev/null 2>&1 || { echo "the postgres user is required (Debian's postgresql package makes it)"; exit 1; }

work=$(mktemp -d)
chmod 755 "$work" # the postgres user must reach its cluster in here
pids=()
pg_running=0
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
stop_pg() {
	if [ $pg_running = 1 ]; then
		as_pg timeout 30 "$bin/pg_ctl" -D "$work/pg" -m fast -w -t 20 stop >/dev/null 2>&1 || true
		pg_running=0
	fi
}
cleanup() {
	for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	stop_pg
	rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "timed out: $*"; return 1; }
pgport=$(free_port) smtp=$(free_port)

passed=0 failed=0
ok()   { echo "ok   $1"; passed=$((passed+1)); }
fail() { echo "FAIL $1"; failed=$((failed+1)); }

# A throwaway cluster: trust on 127.0.0.1 only, socket in the temp dir.
mkdir -p "$work/pg" "$work/sock"
chown postgres "$work/pg" "$work/sock" 2>/dev/null || true
as_pg timeout 120 "$initdb" -D "$work/pg" -U postgres -A trust -E UTF8 --no-sync >"$work/initdb.log" 2>&1 \
	|| { cat "$work/initdb.log"; exit 1; }
as_pg timeout 60 "$bin/pg_ctl" -D "$work/pg" -l "$work/pg/server.log" -w -t 30 \
	-o "-c listen_addresses=127.0.0.1 -p $pgport -k $work/sock -c fsync=off" start >/dev/null
pg_running=1
uri="postgresql://postgres@127.0.0.1:$pgport/larkpost"
psql() { timeout 30 "$bin/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
psql "postgresql://postgres@127.0.0.1:$pgport/postgres" -c "CREATE DATABASE larkpost"
psql "$uri" <<'SQL'
CREATE TABLE virtual (address text NOT NULL, goto text NOT NULL, active boolean NOT NULL DEFAULT true);
INSERT INTO virtual (address, goto) VALUES
	('info@mx.sql.test', 'bob@mx.sql.test'),
	('team@mx.sql.test', 'bob@mx.sql.test'),
	('team@mx.sql.test', 'carol@mx.sql.test');
CREATE TABLE transport (domain text PRIMARY KEY, transport text NOT NULL);
INSERT INTO transport VALUES ('mx.sql.test', 'local'), ('example.org', 'smtp:[relay.example.org]:587');
SQL
echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$pgport"

# 1. The Go tests against the real server.
if LARKPOST_PGSQL="$uri" timeout 600 go test -count=1 -tags pgsql ./stdlib/maps/ -run Real -v > "$work/gotest.txt" 2>&1; then
	ok "go test -tags pgsql ./stdlib/maps/ -run Real ($(grep -c '^--- PASS' "$work/gotest.txt") tests)"
else
	fail "go test -tags pgsql ./stdlib/maps/ -run Real"; tail -40 "$work/gotest.txt"
fi

# 2. larkpost map query on the table files and on the settings.
go build -o "$work/larkpost" ./cmd/larkpost
cat > "$work/virtual.cf" <<CF
# virtual_alias_maps = pgsql:$work/virtual.cf
hosts = 127.0.0.1:$pgport
user = postgres
dbname = larkpost
query = SELECT goto FROM virtual WHERE address = '%s' AND active
timeout = 2s
cache_ttl = 1
CF
cat > "$work/transport.cf" <<CF
hosts = inet:127.0.0.1:$pgport
user = postgres
dbname = larkpost
table = transport
select_field = transport
where_field = domain
timeout = 2s
cache_ttl = 1
CF
cat > "$work/larkpost.star" <<STAR
config(
    allow_root = True,   # this run is about SQL tables, not the root split (.ci/privs.sh)
    hostname = "mx.sql.test",
    data_dir = "$work/data",
    resolvers = [],
    recipient_delimiter = "+",
    listen = {"smtp": "127.0.0.1:$smtp"},
    virtual_alias_maps = ["pgsql:$work/virtual.cf"],
    transport_maps = ["pgsql:$work/transport.cf"],
)
STAR
query() { timeout 60 "$work/larkpost" map query -c "$work/larkpost.star" "$@"; }
if out=$(query "pgsql:$work/virtual.cf" team@mx.sql.test 2>&1) && grep -q "^bob@mx.sql.test,carol@mx.sql.test" <<<"$out"; then
	ok "map query pgsql:virtual.cf team@mx.sql.test: $(cut -f1 <<<"$out")"
else
	fail "map query pgsql:virtual.cf team@"; echo "$out"
fi
if out=$(query virtual_alias_maps Info+tag@MX.sql.test 2>&1) && grep -q "^bob@mx.sql.test.*key \"info@mx.sql.test\"" <<<"$out"; then
	ok "map query virtual_alias_maps Info+tag@MX.sql.test: $(cut -f1 <<<"$out") (key info@mx.sql.test)"
else
	fail "map query virtual_alias_maps Info+tag@"; echo "$out"
fi
if out=$(query transport_maps someone@example.org 2>&1) && grep -q "^smtp:\[relay.example.org\]:587" <<<"$out"; then
	ok "map query transport_maps someone@example.org: $(cut -f1 <<<"$out")"
else
	fail "map query transport_maps"; echo "$out"
fi
if ! out=$(query "pgsql:$work/virtual.cf" "x' OR '1'='1@mx.sql.test" 2>&1); then
	ok "map query with an injection attempt finds nothing"
else
	fail "map query injection"; echo "$out"
fi
if out=$("$work/larkpost" check -c "$work/larkpost.star" 2>&1); then
	ok "larkpost check with the pgsql tables"
else
	fail "larkpost check"; echo "$out"
fi
printf 'hosts = 127.0.0.1:%s\ndbname = larkpost\nhostname = oops\nquery = SELECT 1\n' "$pgport" > "$work/bad.cf"
sed "s|virtual.cf\"]|bad.cf\"]|" "$work/larkpost.star" > "$work/bad.star"
if ! out=$("$work/larkpost" check -c "$work/bad.star" 2>&1) && grep -q "bad.cf:3: unknown pgsql parameter \"hostname\"" <<<"$out"; then
	ok "larkpost check refuses a bad parameter: $(grep -o 'bad.cf:3: [^(]*' <<<"$out")"
else
	fail "larkpost check with a bad parameter"; echo "$out"
fi

# 3. A live server: a message to the alias lands in the target's Maildir.
setsid "$work/larkpost" serve -c "$work/larkpost.star" > "$work/serve.log" 2>&1 &
pids+=($!)
wait_for grep -q "listening on" "$work/serve.log" || { cat "$work/serve.log"; exit 1; }
count() { ls "$work/data/mail/$1/new" 2>/dev/null | wc -l; }
smtp_send() { # rcpt subject: prints the SMTP outcome
	timeout 60 python3 - "$smtp" "$1" "$2" <<'PY'
import smtplib, sys
port, rcpt, subject = int(sys.argv[1]), sys.argv[2], sys.argv[3]
try:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=30) as s:
        s.sendmail("ann@sender.example", [rcpt], f"Subject: {subject}\r\n\r\nhi\r\n")
    print("250 queued")
except smtplib.SMTPRecipientsRefused as e:
    code, msg = e.recipients[rcpt]
    print(code, msg.decode())
except smtplib.SMTPResponseException as e:
    print(e.smtp_code, e.smtp_error.decode())
PY
}
out=$(smtp_send info@mx.sql.test "via pgsql")
if [ "$out" = "250 queued" ] && wait_for test "$(count bob)" -ge 1 && grep -q "^Subject: via pgsql" "$work/data/mail/bob/new/"* \
	&& grep -q "^X-Original-To: info@mx.sql.test" "$work/data/mail/bob/new/"*; then
	ok "SMTP to info@mx.sql.test delivered to bob's Maildir (virtual_alias_maps and transport_maps from PostgreSQL)"
else
	fail "SMTP to the alias: $out"; cat "$work/serve.log"
fi

# 4. PostgreSQL stopped: the same recipient is deferred, not refused.
stop_pg
sleep 2 # cache_ttl = 1: the answer above is no longer used
out=$(smtp_send info@mx.sql.test "while down")
if [[ "$out" == 451* ]] && grep -q "4.3.0" <<<"$out"; then
	ok "with PostgreSQL stopped, RCPT TO:<info@mx.sql.test> gets $out"
else
	fail "with PostgreSQL stopped: $out (want 451 4.3.0)"
fi
if wait_for grep -q "warning: virtual_alias_maps: pgsql:.*virtual.cf: lookup \"info@mx.sql.test\"" "$work/serve.log"; then
	ok "the log names the setting, the table, the key and the cause: $(grep -o 'warning: virtual_alias_maps: .*' "$work/serve.log" | head -1 | cut -c1-160)"
else
	fail "no lookup warning in the log"; cat "$work/serve.log"
fi
if [ "$(count bob)" -eq 1 ]; then
	ok "nothing else delivered or bounced"
else
	fail "bob has $(count bob) messages"
fi

if out=$(timeout 60 "$work/larkpost" check -c "$work/larkpost.star" 2>&1) && grep -q "warning: database not available" <<<"$out"; then
	ok "larkpost check with PostgreSQL stopped: loads, with a warning"
else
	fail "larkpost check with PostgreSQL stopped"; echo "$out"
fi

if [ $failed -ne 0 ]; then echo "--- server log"; cat "$work/serve.log"; fi
echo "interop-sql: $passed passed, $failed failed"
[ $failed -eq 0 ]
