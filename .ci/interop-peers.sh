#!/usr/bin/env bash
# Interop with real peer servers: a real `larkpost serve` relays to Debian's
# Postfix (relayhost, smtp transport, STARTTLS "may") and hands mail to
# Dovecot over LMTP (route hook), which is then read back with IMAP; and a
# user's filter script files mail into Maildir++ folders that Dovecot's IMAP
# lists and reads.
#
# Postfix comes from .ci/peers/ (postfix-setup.sh installs and configures it
# on 127.0.0.1:$POSTFIX_PORT for bench.test -> ~benchuser/Maildir,
# postfix-ctl.sh starts/stops it, postfix.env has the settings). Dovecot runs
# from a throw-away config in a temp dir (its own base_dir, state_dir and
# log), never /etc/dovecot's.
# Everything listens on 127.0.0.1; every wait is bounded; every daemon this
# script starts is stopped on exit. Must run as root (apt-get, postfix).
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0 failed=0
say() { printf 'interop-peers: %s\n' "$*"; }
die() { echo "FAIL: $*"; echo "interop-peers: $passed passed, $((failed + 1)) failed"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (apt-get, postfix, dovecot)"
peers_dir=$(cd .ci/peers && pwd)
for f in postfix.env postfix-ctl.sh postfix-setup.sh; do
	[ -f "$peers_dir/$f" ] || die "$peers_dir/$f is missing"
done
# shellcheck source=.ci/peers/postfix.env
. "$peers_dir/postfix.env"
postfix_ctl=(bash "$peers_dir/postfix-ctl.sh") # + start|stop|status

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-o DPkg::Lock::Timeout=120 -o Acquire::http::Timeout=30 -o Acquire::Retries=1)

# ---------------------------------------------------------------------------
# State for cleanup: everything the trap has to undo.
work=
larkpids=()
dovecot_pid=
postfix_started=0
policy_created=0
POLICY=/usr/sbin/policy-rc.d
pf_tls_saved=() # Postfix's smtpd TLS settings before section 2 gave it a CA-signed certificate

tree_pids() { # ROOT: ROOT and all its descendants
	ps -e -o pid=,ppid= | awk -v root="$1" '
		{ parent[$1] = $2 }
		END { for (p in parent) { q = p; while (q != root && q > 1 && (q in parent)) q = parent[q]; if (q == root) print p } }'
}

starttime() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; } # PID: its start time (field 22)

stop_pid() { # PID [SECONDS]: SIGTERM, wait, then SIGKILL what is left of its tree
	local pid=$1 secs=${2:-10} tree="" p
	kill -0 "$pid" 2>/dev/null || return 0
	for p in $(tree_pids "$pid"); do tree+="$p:$(starttime "$p") "; done
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq $((secs * 10))); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	for p in $tree; do # only the very processes seen above, never a reused pid
		[ -n "${p#*:}" ] && [ "$(starttime "${p%%:*}")" = "${p#*:}" ] && { kill -KILL "${p%%:*}" 2>/dev/null || true; }
	done
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	set +e
	trap '' INT TERM # finish the cleanup even when signalled again
	for p in "${larkpids[@]}"; do stop_pid "$p" 10; done
	[ -n "$dovecot_pid" ] && stop_pid "$dovecot_pid" 10
	if [ ${#pf_tls_saved[@]} -gt 0 ]; then
		postconf -e "${pf_tls_saved[@]}"
		rm -f /etc/postfix/larkpost-interop-cert.pem /etc/postfix/larkpost-interop-key.pem
		[ "$postfix_started" = 1 ] || postfix reload >/dev/null 2>&1
	fi
	if [ "$postfix_started" = 1 ]; then
		timeout 30 "${postfix_ctl[@]}" stop >/dev/null || say "warning: could not stop postfix"
	fi
	[ "$policy_created" = 1 ] && rm -f "$POLICY"
	[ -n "$work" ] && rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'die "interrupted by SIGINT"' INT
trap 'die "interrupted by SIGTERM"' TERM

retry3() { # CMD...: up to 3 tries, 5 s apart
	local try
	for try in 1 2 3; do
		"$@" && return 0
		say "'$*' failed (try $try/3)"
		[ "$try" = 3 ] || sleep 5
	done
	return 1
}

# ---------------------------------------------------------------------------
# 1. Packages. Package installs must not start daemons on default ports:
#    a policy-rc.d that denies (as postfix-setup.sh does), and afterwards stop
#    whatever an install started anyway.
postfix_ready() { # the Postfix of .ci/peers/postfix-setup.sh is installed and configured
	command -v postfix >/dev/null && command -v postconf >/dev/null || return 1
	id "$BENCH_USER" >/dev/null 2>&1 && [ -d "$(bench_maildir)/new" ] || return 1
	[ -n "$(postconf -M "127.0.0.1:$POSTFIX_PORT/inet" 2>/dev/null)" ] || return 1
	case ", $(postconf -h mydestination 2>/dev/null)," in *", $BENCH_DOMAIN,"*) ;; *) return 1 ;; esac
	[ "$(postconf -h home_mailbox 2>/dev/null)" = Maildir/ ]
}
dovecot_pkgs=()
for p in dovecot-core dovecot-lmtpd dovecot-imapd; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || dovecot_pkgs+=("$p")
done
command -v python3 >/dev/null || dovecot_pkgs+=(python3)

if ! postfix_ready || [ ${#dovecot_pkgs[@]} -gt 0 ]; then
	if [ ! -e "$POLICY" ]; then
		printf '#!/bin/sh\n# temporary, created by larkpost .ci/interop-peers.sh\nexit 101\n' >"$POLICY"
		chmod 755 "$POLICY"
		policy_created=1
	fi
	say "apt-get update"
	retry3 timeout 150 apt-get "${APT_OPTS[@]}" update -qq || die "apt-get update failed"
	if ! postfix_ready; then
		say "setting up postfix with $peers_dir/postfix-setup.sh"
		retry3 env SKIP_APT_UPDATE=1 timeout 150 bash "$peers_dir/postfix-setup.sh" ||
			die "postfix-setup.sh failed"
		postfix_ready || die "postfix is still not set up for $BENCH_DOMAIN on 127.0.0.1:$POSTFIX_PORT"
	fi
	if [ ${#dovecot_pkgs[@]} -gt 0 ]; then
		# Was a system dovecot running before? Then it is not ours to stop.
		sys_dovecot_before=0
		[ -s /run/dovecot/master.pid ] && kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null && sys_dovecot_before=1
		say "apt-get install ${dovecot_pkgs[*]}"
		retry3 timeout 150 apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${dovecot_pkgs[@]}" >/dev/null ||
			die "apt-get install ${dovecot_pkgs[*]} failed"
		if [ "$sys_dovecot_before" = 1 ]; then
			: # someone else's dovecot: leave it alone
		elif [ -d /run/systemd/system ]; then
			systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
		elif [ -s /run/dovecot/master.pid ] &&
			kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
			say "stopping the dovecot the package install started"
			stop_pid "$(cat /run/dovecot/master.pid)" 10
		fi
	fi
	if [ "$policy_created" = 1 ]; then rm -f "$POLICY"; policy_created=0; fi
fi
for c in postfix dovecot doveconf python3; do
	command -v "$c" >/dev/null || die "$c is missing after the install"
done

# ---------------------------------------------------------------------------
# Build larkpost, helpers.
work=$(mktemp -d /tmp/larkpost-peers.XXXXXX)
chmod 755 "$work" # dovecot's unprivileged processes traverse it
say "go build"
timeout 300 go build -o "$work/larkpost" ./cmd/larkpost

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # SECONDS CMD...: poll CMD every 0.2 s until it succeeds
	local secs=$1; shift
	for _ in $(seq $((secs * 5))); do "$@" && return 0; sleep 0.2; done
	return 1
}
log_has() { grep -Eq -- "$2" "$1" 2>/dev/null; }
listening() { [ -n "$(ss -ltnH "sport = :$1" 2>/dev/null)" ]; }

show_logs=()
ok() { echo "PASS: $1"; passed=$((passed + 1)); }
fail() { echo "FAIL: $1"; failed=$((failed + 1)); shift; show_logs+=("$@"); }

start_larkpost() { # NAME: check and start $work/NAME.star, log in $work/NAME.log
	local name=$1
	"$work/larkpost" check -c "$work/$name.star" || die "larkpost check failed for $name.star"
	"$work/larkpost" serve -c "$work/$name.star" 2>"$work/$name.log" &
	larkpids+=($!)
	if ! wait_for 15 log_has "$work/$name.log" "listening on smtp"; then
		cat "$work/$name.log"
		die "larkpost ($name) did not start listening within 15 s"
	fi
}

send_mail() { # PORT FROM TO SUBJECT: one message with Python smtplib
	python3 - "$@" <<'PY'
import smtplib, sys
port, sender, rcpt, subject = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
msg = (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
       f"Message-Id: <{subject}@interop.test>\r\n\r\ninterop-peers body for {rcpt}\r\n")
with smtplib.SMTP("127.0.0.1", port, local_hostname="client.interop.test", timeout=30) as s:
    refused = s.sendmail(sender, [rcpt], msg.encode())
    assert not refused, refused
PY
}

stamp=$(date +%s)-$$
sender=ann@localhost # local to larkpost: bounces come back to its own Maildir

# ---------------------------------------------------------------------------
# 2. larkpost -> Postfix, through relayhost.
echo "== larkpost -> postfix (relayhost [127.0.0.1]:$POSTFIX_PORT)"
postfix_log=$(postconf -h maillog_file 2>/dev/null || true) # $LOG_DIR/postfix.log after postfix-setup.sh
[ -n "$postfix_log" ] || postfix_log=$LOG_DIR/postfix.log
postfix_log_start=$(($({ wc -l <"$postfix_log"; } 2>/dev/null || echo 0) + 1)) # no log yet on a fresh install
# Postfix's smtpd gets a certificate from a CA made here (for 127.0.0.1,
# the relayhost's name), and larkpost trusts that CA with smtp_tls_CAfile:
# the delivery must then be logged "TLS verified". The snakeoil
# certificate is put back on exit.
ca=$work/ca
install -d -m 700 "$ca"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
	-keyout "$ca/ca.key" -out "$ca/ca.pem" -subj "/CN=larkpost interop CA" \
	-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null ||
	die "openssl could not make the test CA"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-keyout "$ca/pf.key" -out "$ca/pf.csr" -subj "/CN=127.0.0.1" 2>/dev/null ||
	die "openssl could not make postfix's key"
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$ca/ext"
openssl x509 -req -in "$ca/pf.csr" -CA "$ca/ca.pem" -CAkey "$ca/ca.key" -CAcreateserial -days 2 \
	-extfile "$ca/ext" -out "$ca/pf.pem" 2>/dev/null || die "openssl could not sign postfix's certificate"
for k in smtpd_tls_cert_file smtpd_tls_key_file smtpd_tls_security_level smtpd_tls_loglevel; do
	pf_tls_saved+=("$k=$(postconf -h "$k")")
done
install -m 644 "$ca/pf.pem" /etc/postfix/larkpost-interop-cert.pem
install -m 600 "$ca/pf.key" /etc/postfix/larkpost-interop-key.pem
postconf -e smtpd_tls_cert_file=/etc/postfix/larkpost-interop-cert.pem \
	smtpd_tls_key_file=/etc/postfix/larkpost-interop-key.pem smtpd_tls_security_level=may smtpd_tls_loglevel=1
if timeout 10 "${postfix_ctl[@]}" status >/dev/null 2>&1; then
	say "postfix already running; using it and leaving it running"
	postfix reload >/dev/null 2>&1 || die "postfix reload failed after the certificate change"
else
	# shellcheck disable=SC2016 # eval expands it, on every try
	if listening "$POSTFIX_PORT" && ! wait_for 30 eval '! listening "$POSTFIX_PORT"'; then
		die "127.0.0.1:$POSTFIX_PORT is taken by another program, not postfix: $(ss -ltnpH "sport = :$POSTFIX_PORT" | awk '{print $NF}' | head -n1)"
	fi
	timeout 60 "${postfix_ctl[@]}" start || die "could not start postfix with postfix-ctl.sh"
	postfix_started=1
fi

relay_port=$(free_port)
cat >"$work/relay.star" <<STAR
config(
    allow_root = True,   # these runs are about SMTP, not the root split (.ci/privs.sh)
    hostname = "mx.interop.test",
    destinations = ["localhost"],
    listen = {"smtp": "127.0.0.1:$relay_port"},
    data_dir = "$work/relay-data",
    networks = ["127.0.0.0/8"],
    relayhost = "[127.0.0.1]:$POSTFIX_PORT",
    smtp_tls_security_level = "may",
    smtp_tls_CAfile = "$ca/ca.pem",
    resolvers = [],
)
STAR
start_larkpost relay

maildir=$(bench_maildir)
subj_pf="larkpost-to-postfix-$stamp"
touch -d '-2 seconds' "$work/stamp" # files delivered from now on are newer
found_in_maildir() {
	local f
	f=$(find "$maildir/new" -maxdepth 1 -type f -newer "$work/stamp" -exec grep -lF -- "Subject: $subj_pf" {} + 2>/dev/null | head -n1)
	[ -n "$f" ] && delivered_file=$f
}
delivered_file=
if send_mail "$relay_port" "$sender" "$BENCH_USER@$BENCH_DOMAIN" "$subj_pf" >"$work/send-pf.txt" 2>&1 &&
	wait_for 30 found_in_maildir; then
	ok "larkpost relays to postfix; message in $maildir/new"
	rm -f "$delivered_file"
else
	fail "larkpost relays to postfix; message in $maildir/new" relay postfix
	cat "$work/send-pf.txt"
fi
relay_re="to=<$BENCH_USER@$BENCH_DOMAIN>, relay=[^,]*127\.0\.0\.1[^,]*, .*status=sent"
if wait_for 10 log_has "$work/relay.log" "$relay_re"; then
	ok "larkpost logs relay=...127.0.0.1... status=sent: $(grep -Eo "relay=[^,]*" "$work/relay.log" | head -n1)"
else
	fail "larkpost logs relay=...127.0.0.1... status=sent" relay postfix
fi
if log_has "$work/relay.log" "smtp to [^ ]*127\.0\.0\.1[^ ]*: TLS verified"; then
	ok "larkpost verified postfix's certificate against smtp_tls_CAfile: $(grep -Eo "smtp to [^ ]*127\.0\.0\.1[^ ]*: TLS [a-z]+" "$work/relay.log" | head -n1)"
else
	fail "larkpost logs 'TLS verified' for postfix (CA in smtp_tls_CAfile)" relay postfix
fi
if wait_for 10 eval 'tail -n +"$postfix_log_start" "$postfix_log" | grep -q "TLS connection established from"'; then
	ok "postfix logs the TLS connection: $(tail -n +"$postfix_log_start" "$postfix_log" | grep -o "TLS connection established from.*" | head -n1)"
else
	fail "postfix logs 'TLS connection established from' larkpost" postfix
fi

# ---------------------------------------------------------------------------
# 3. larkpost -> Dovecot LMTP (route hook), read back with IMAP.
echo "== larkpost -> dovecot lmtp, read back over imap"
dv=$work/dovecot
install -d -m 755 "$dv" "$dv/run" "$dv/state" "$dv/home"
install -d -m 700 -o nobody -g nogroup "$dv/home/alice"
imap_port=$(free_port)
lmtp_sock=$dv/run/lmtp
# Section 4's user: its mail is the Maildir++ tree larkpost's local delivery
# writes (filed by alice's filter script), read with this same Dovecot.
filter_data=$work/filter-data
filter_maildir=$filter_data/mail/alice
install -d -m 700 -o nobody -g nogroup "$dv/home/alice-filter"
nobody_ids="$(id -u nobody):$(getent group nogroup | cut -d: -f3)"
{
	printf 'alice@example.org:{PLAIN}secret:%s::%s::\n' "$nobody_ids" "$dv/home/alice"
	printf 'alice@filter.test:{PLAIN}secret:%s::%s::userdb_mail=maildir:%s\n' \
		"$nobody_ids" "$dv/home/alice-filter" "$filter_maildir"
} >"$dv/users"
chmod 644 "$dv/users"
cat >"$dv/dovecot.conf" <<CONF
# Throw-away Dovecot for larkpost's interop test (generated).
instance_name = larkpost-interop
base_dir = $dv/run
state_dir = $dv/state
log_path = $dv/dovecot.log
protocols = lmtp imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~/Maildir
lda_mailbox_autocreate = yes
postmaster_address = postmaster@example.org
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $dv/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $dv/users
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $imap_port
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
}
CONF
if ! doveconf -c "$dv/dovecot.conf" -n >"$work/doveconf.txt" 2>&1; then
	cat "$work/doveconf.txt"
	die "doveconf rejects the generated config $dv/dovecot.conf"
fi
dovecot -F -c "$dv/dovecot.conf" </dev/null >>"$dv/dovecot.log" 2>&1 &
dovecot_pid=$!
dovecot_up() { kill -0 "$dovecot_pid" 2>/dev/null && [ -S "$lmtp_sock" ] && listening "$imap_port"; }
if ! wait_for 15 dovecot_up; then
	cat "$dv/dovecot.log" 2>/dev/null
	die "dovecot did not come up (imap 127.0.0.1:$imap_port, lmtp $lmtp_sock) within 15 s"
fi
bad=$(ss -ltnpH 2>/dev/null | grep -E "pid=($(tree_pids "$dovecot_pid" | paste -sd'|'))," | awk '{print $4}' |
	grep -vx "127.0.0.1:$imap_port" || true)
[ -z "$bad" ] || die "dovecot listens on unexpected address(es): ${bad//$'\n'/ }"

lmtp_port=$(free_port)
cat >"$work/lmtp.star" <<STAR
config(
    allow_root = True,   # these runs are about SMTP, not the root split (.ci/privs.sh)
    hostname = "mx.interop.test",
    destinations = ["localhost"],
    relay_domains = ["example.org"],
    listen = {"smtp": "127.0.0.1:$lmtp_port"},
    data_dir = "$work/lmtp-data",
    networks = ["127.0.0.0/8"],
    resolvers = [],
)

def route(rcpt, msg):
    if rcpt.domain == "example.org":
        return "lmtp:unix:$lmtp_sock"
    return None
STAR
start_larkpost lmtp

subj_dv="larkpost-to-dovecot-$stamp"
if send_mail "$lmtp_port" "$sender" alice@example.org "$subj_dv" >"$work/send-dv.txt" 2>&1 &&
	timeout 60 python3 - "$imap_port" "$subj_dv" >>"$work/send-dv.txt" 2>&1 <<'PY'; then
import imaplib, sys, time
port, subject = int(sys.argv[1]), sys.argv[2]
deadline, last = time.monotonic() + 30, None
while time.monotonic() < deadline:
    try:
        with imaplib.IMAP4("127.0.0.1", port, timeout=10) as m:
            m.login("alice@example.org", "secret")
            typ, _ = m.select("INBOX", readonly=True)
            assert typ == "OK", typ
            typ, data = m.search(None, "SUBJECT", '"%s"' % subject)
            ids = data[0].split() if typ == "OK" and data and data[0] else []
            if ids:
                typ, msg = m.fetch(ids[-1], "(RFC822)")
                raw = msg[0][1].decode("utf-8", "replace")
                assert "Subject: " + subject in raw, raw
                assert "interop-peers body for alice@example.org" in raw, raw
                print("imap: found message", ids[-1].decode(), "in INBOX")
                sys.exit(0)
            last = "not in INBOX yet"
    except (OSError, imaplib.IMAP4.error) as e:
        last = repr(e)
    time.sleep(0.5)
print("imap: gave up after 30 s:", last)
sys.exit(1)
PY
	ok "larkpost delivers to dovecot over lmtp; imap reads it back"
else
	fail "larkpost delivers to dovecot over lmtp; imap reads it back" lmtp dovecot
	cat "$work/send-dv.txt"
fi
dv_re="to=<alice@example\.org>, relay=[^,]*, .*status=sent"
if wait_for 10 log_has "$work/lmtp.log" "$dv_re"; then
	ok "larkpost logs the lmtp delivery: $(grep -Eo "to=<alice@example\.org>, relay=[^,]*" "$work/lmtp.log" | head -n1)"
else
	fail "larkpost logs the lmtp delivery as sent" lmtp dovecot
fi

subj_nx="larkpost-unknown-user-$stamp"
nx_re="to=<nobody@example\.org>, relay=[^,]*, .*status=(bounced|deferred)"
if send_mail "$lmtp_port" "$sender" nobody@example.org "$subj_nx" >"$work/send-nx.txt" 2>&1 &&
	wait_for 30 log_has "$work/lmtp.log" "$nx_re"; then
	ok "unknown lmtp user: $(grep -Eo "to=<nobody@example\.org>, .*" "$work/lmtp.log" | head -n1 | sed 's/, delay=[^)]*dsn=/, ... dsn=/')"
else
	fail "unknown lmtp user is bounced or deferred" lmtp dovecot
	cat "$work/send-nx.txt"
fi

# ---------------------------------------------------------------------------
# 4. larkpost files into Maildir++ folders (alice's filter script, the
#    seed's procmail rules), Dovecot IMAP lists and reads them. larkpost
#    (root) writes $filter_maildir; once the three messages are there it is
#    handed to Dovecot's user (nobody:nogroup) and read as alice@filter.test,
#    whose userdb mail is maildir:$filter_maildir (Maildir++: .Somedomain/
#    and .spam/ are the IMAP folders Somedomain and spam, separator ".").
echo "== larkpost files into Maildir++ folders, dovecot imap lists and reads them"
install -d -m 755 "$work/filters" "$filter_data" "$filter_data/mail" # nobody traverses to the Maildir
cat >"$work/filters/alice.star" <<'STAR'
# alice's filter: the seed's procmail recipe.
def file(msg):
    if re.search("(?i)somedomain", msg.header("From", "")):
        return "Somedomain"
    if re.search("(?i)viagra", msg.subject):
        return "spam"
    return None
STAR
filter_port=$(free_port)
cat >"$work/filter.star" <<STAR
config(
    allow_root = True,   # these runs are about SMTP, not the root split (.ci/privs.sh)
    hostname = "mx.filter.test",
    destinations = ["filter.test"],
    listen = {"smtp": "127.0.0.1:$filter_port"},
    data_dir = "$filter_data",
    filter_path = "$work/filters/{user}.star",
    networks = ["127.0.0.0/8"],
    resolvers = [],
)
STAR
start_larkpost filter

# folder (""=INBOX), From header, subject, body: one line each, tab-separated.
subj_fs="lunch larkpost-filter-$stamp" subj_fv="cheap VIAGRA larkpost-filter-$stamp" subj_fi="plain larkpost-filter-$stamp"
printf '%s\t%s\t%s\t%s\n' \
	Somedomain joe@somedomain.com "$subj_fs" "filed by From: somedomain, $stamp" \
	spam "$sender" "$subj_fv" "filed by Subject: viagra, $stamp" \
	"" "$sender" "$subj_fi" "no rule matched: INBOX, $stamp" >"$work/filter-msgs.tsv"
if python3 - "$filter_port" "$sender" alice@filter.test "$work/filter-msgs.tsv" >"$work/send-filter.txt" 2>&1 <<'PY'; then
import smtplib, sys
port, envfrom, rcpt, tsv = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
with smtplib.SMTP("127.0.0.1", port, local_hostname="client.interop.test", timeout=30) as s:
    for line in open(tsv):
        folder, hfrom, subject, body = line.rstrip("\n").split("\t")
        msg = (f"From: {hfrom}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
               f"Message-Id: <{subject.replace(' ', '.')}@interop.test>\r\n\r\n{body}\r\nsecond line\r\n")
        refused = s.sendmail(envfrom, [rcpt], msg.encode())
        assert not refused, refused
PY
	ok "larkpost accepts three messages for alice@filter.test"
else
	fail "larkpost accepts three messages for alice@filter.test" filter
	cat "$work/send-filter.txt"
fi

filed_in() { # DIR SUBJECT: a message with SUBJECT is in the Maildir DIR's new/
	[ -n "$(find "$1/new" -maxdepth 1 -type f -exec grep -lF -- "Subject: $2" {} + 2>/dev/null | head -n1)" ]
}
all_filed() { filed_in "$filter_maildir/.Somedomain" "$subj_fs" && filed_in "$filter_maildir/.spam" "$subj_fv" && filed_in "$filter_maildir" "$subj_fi"; }
wait_for 20 all_filed || true # each check below reports what is missing
for f in "Somedomain:$subj_fs" "spam:$subj_fv" ":$subj_fi"; do
	folder=${f%%:*} subject=${f#*:}
	dir=$filter_maildir${folder:+/.$folder}
	what="filter files \"$subject\" in ${folder:-INBOX} (${dir#"$filter_data"/}/new)"
	if filed_in "$dir" "$subject" && { [ -z "$folder" ] || [ -f "$dir/maildirfolder" ]; }; then
		ok "$what${folder:+, with maildirfolder}"
	else
		fail "$what${folder:+, with maildirfolder}" filter
		find "$filter_data/mail" -printf '%M %u %p\n' 2>/dev/null | head -n 40
	fi
done
n_new=$(find "$filter_maildir" -path '*/new/*' -type f 2>/dev/null | wc -l)
if [ "$n_new" = 3 ]; then
	ok "exactly three messages in alice's Maildir, no stray copies"
else
	fail "exactly three messages in alice's Maildir, no stray copies (found $n_new)" filter
fi

# Hand the Maildir to Dovecot's user; larkpost writes nothing more to it.
if [ -d "$filter_maildir" ] && ! chown -R nobody:nogroup "$filter_maildir"; then
	fail "chown -R nobody:nogroup $filter_maildir" filter
fi
timeout 60 python3 - "$imap_port" "$work/filter-msgs.tsv" >"$work/imap-filter.txt" 2>&1 <<'PY' || true
import imaplib, re, sys, time
port, tsv = int(sys.argv[1]), sys.argv[2]
msgs = [l.rstrip("\n").split("\t") for l in open(tsv)]
def check(ok, what, detail=""):
    print(("PASS: " if ok else "FAIL: ") + what + ("" if ok or not detail else ": " + str(detail)))
def q(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
m, last, deadline = None, None, time.monotonic() + 20
while m is None and time.monotonic() < deadline:
    try:
        m = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        m.login("alice@filter.test", "secret")
    except (OSError, imaplib.IMAP4.error) as e:
        last, m = repr(e), None
        time.sleep(0.5)
if m is None:
    check(False, "imap LOGIN alice@filter.test", last)
    sys.exit(1)
check(True, "imap LOGIN alice@filter.test")
typ, data = m.list('""', "*")
names = {}
for line in data if typ == "OK" else []:
    line = line.decode("utf-8", "replace") if isinstance(line, bytes) else str(line)
    mo = re.match(r'\((?P<flags>[^)]*)\) (?P<sep>"(?:[^"\\]|\\.)*"|NIL) (?P<name>"(?:[^"\\]|\\.)*"|\S+)$', line)
    if mo:
        names[mo["name"].strip('"')] = mo["sep"]
listed = ", ".join(f"{n} {s}" for n, s in sorted(names.items()))
for want in ("INBOX", "Somedomain", "spam"):
    check(want in names, f'imap LIST "" "*" shows {want}', f"{typ} {listed or data}")
check(bool(names) and set(names.values()) == {'"."'}, 'imap LIST hierarchy separator is "." (Maildir++)', listed)
for folder in ("INBOX", "Somedomain", "spam"):
    typ, data = m.select(q(folder), readonly=True)
    if typ != "OK":
        check(False, f"imap SELECT {folder}", f"{typ} {data}")
        continue
    for want_folder, hfrom, subject, body in msgs:
        want_folder = want_folder or "INBOX"
        typ, data = m.search(None, "SUBJECT", q(subject))
        ids = data[0].split() if typ == "OK" and data and data[0] else []
        if want_folder != folder:
            check(not ids, f"imap {folder}: no copy of {subject!r}", f"{typ} {data}")
            continue
        if len(ids) != 1:
            check(False, f"imap {folder}: SEARCH SUBJECT {subject!r} finds one message", f"{typ} {data}")
            continue
        typ, fd = m.fetch(ids[0], "(BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)] BODY.PEEK[TEXT])")
        parts = {(b"TEXT" if b"[TEXT]" in p[0] else b"HEADER"): p[1].decode("utf-8", "replace")
                 for p in (fd if typ == "OK" else []) if isinstance(p, tuple)}
        hdr, text = parts.get(b"HEADER", ""), parts.get(b"TEXT", "")
        got = text.replace("\r\n", "\n")
        check(got == f"{body}\nsecond line\n" and f"From: {hfrom}" in hdr and f"Subject: {subject}" in hdr,
              f"imap {folder}: SELECT, SEARCH, FETCH {subject!r}: From and body text as sent", f"{typ} {hdr!r} {text!r}")
m.logout()
print("imap checks done")
PY
while IFS= read -r line; do
	case $line in
	"PASS: "*) ok "${line#PASS: }" ;;
	"FAIL: "*) fail "${line#FAIL: }" dovecot ;;
	esac
done <"$work/imap-filter.txt"
if ! grep -qx "imap checks done" "$work/imap-filter.txt"; then
	fail "imap checks of the filed folders ran to the end" dovecot
	grep -Ev '^(PASS|FAIL): ' "$work/imap-filter.txt" | tail -n 30
fi

# ---------------------------------------------------------------------------
# 5. Logs on failure, summary.
if [ $failed -ne 0 ]; then
	for l in $(printf '%s\n' "${show_logs[@]}" | sort -u); do
		case $l in
		relay | lmtp | filter) echo "--- larkpost ($l) log, last 150 lines"; tail -n 150 "$work/$l.log" ;;
		dovecot) echo "--- dovecot log, last 60 lines"; tail -n 60 "$dv/dovecot.log" 2>/dev/null || true ;;
		postfix)
			if [ -f "$postfix_log" ]; then
				echo "--- postfix log ($postfix_log, this run, last 100 lines)"
				tail -n +"$postfix_log_start" "$postfix_log" | tail -n 100
			elif command -v journalctl >/dev/null; then
				echo "--- postfix journal"; journalctl -u postfix --no-pager -n 100 2>/dev/null || true
			fi ;;
		esac
	done
fi
echo "interop-peers: $passed passed, $failed failed"
[ $failed -eq 0 ]
