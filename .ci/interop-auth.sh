#!/usr/bin/env bash
# Interop, SMTP AUTH and submission: two real `larkpost serve` processes
# with a submission listener (STARTTLS required, AUTH required) and an
# SMTPS one, against swaks, Python's smtplib and Debian's Postfix as an
# authenticating client (relayhost + smtp_sasl_*).
#   A checks passwords with a throw-away Dovecot's auth service
#     (smtpd_sasl_type = "dovecot", its auth-client unix socket);
#   B with a passwd-file holding {SHA512-CRYPT} and {BLF-CRYPT} hashes made
#     by doveadm pw (smtpd_sasl_type = "passwd-file"), and
#     reject_sender_login_mismatch.
# Certificates are made here with openssl. Postfix comes from
# .ci/peers/postfix-setup.sh and is started/stopped with postfix-ctl.sh;
# its main.cf is changed with postconf -e for the test and put back byte
# for byte afterwards. Dovecot runs from a config in a temp dir (its own
# base_dir, protocols = none), never /etc/dovecot's.
# Everything listens on 127.0.0.1; every wait is bounded; every daemon this
# script starts is stopped on exit. Must run as root (apt-get, postfix).
set -euo pipefail
cd "$(dirname "$0")/.."
started_at=$SECONDS

passed=0 failed=0
say() { printf 'interop-auth: %s\n' "$*"; }
die() { echo "FAIL: $*"; echo "interop-auth: $passed passed, $((failed + 1)) failed"; exit 1; }

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
postfix_started=0   # we started it: stop it
postfix_reloaded=0  # it ran before: reload it after main.cf is back
maincf=/etc/postfix/main.cf
maincf_saved=       # copy of main.cf while ours is in place
policy_created=0
POLICY=/usr/sbin/policy-rc.d

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

restore_postfix() { # stop the Postfix we started, put main.cf back
	if [ "$postfix_started" = 1 ]; then
		timeout 30 "${postfix_ctl[@]}" stop >/dev/null || say "warning: could not stop postfix"
		postfix_started=0
	fi
	if [ -n "$maincf_saved" ]; then
		cp -p "$maincf_saved" "$maincf" || say "warning: could not restore $maincf from $maincf_saved"
		maincf_saved=
	fi
	if [ "$postfix_reloaded" = 1 ]; then
		timeout 30 postfix reload >/dev/null 2>&1 || say "warning: postfix reload failed"
		postfix_reloaded=0
	fi
}

cleanup() {
	local rc=$?
	set +e
	trap '' INT TERM # finish the cleanup even when signalled again
	restore_postfix
	for p in "${larkpids[@]}"; do stop_pid "$p" 10; done
	[ -n "$dovecot_pid" ] && stop_pid "$dovecot_pid" 10
	[ "$policy_created" = 1 ] && rm -f "$POLICY"
	# main.cf's copy lives in $work: keep $work if it could not be put back.
	if [ -n "$work" ] && [ -z "$maincf_saved" ]; then rm -rf "$work"; fi
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
# 1. Packages. Installs must not start daemons on default ports: a
#    policy-rc.d that denies, and afterwards stop a dovecot an install
#    started anyway.
postfix_ready() { # the Postfix of .ci/peers/postfix-setup.sh is installed and configured
	command -v postfix >/dev/null && command -v postconf >/dev/null || return 1
	id "$BENCH_USER" >/dev/null 2>&1 && [ -d "$(bench_maildir)/new" ] || return 1
	[ -n "$(postconf -M "127.0.0.1:$POSTFIX_PORT/inet" 2>/dev/null)" ] || return 1
	case ", $(postconf -h mydestination 2>/dev/null)," in *", $BENCH_DOMAIN,"*) ;; *) return 1 ;; esac
	[ "$(postconf -h home_mailbox 2>/dev/null)" = Maildir/ ]
}
pkgs=()
for p in swaks openssl dovecot-core python3 libsasl2-modules libio-socket-ssl-perl libnet-ssleay-perl; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || pkgs+=("$p")
done
if ! postfix_ready || [ ${#pkgs[@]} -gt 0 ]; then
	if [ ! -e "$POLICY" ]; then
		printf '#!/bin/sh\n# temporary, created by larkpost .ci/interop-auth.sh\nexit 101\n' >"$POLICY"
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
	if [ ${#pkgs[@]} -gt 0 ]; then
		sys_dovecot_before=0 # a system dovecot that ran before is not ours to stop
		[ -s /run/dovecot/master.pid ] && kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null && sys_dovecot_before=1
		say "apt-get install ${pkgs[*]}"
		retry3 timeout 150 apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null ||
			die "apt-get install ${pkgs[*]} failed"
		if [ "$sys_dovecot_before" = 1 ]; then
			:
		elif [ -d /run/systemd/system ]; then
			systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
		elif [ -s /run/dovecot/master.pid ] && kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
			say "stopping the dovecot the package install started"
			stop_pid "$(cat /run/dovecot/master.pid)" 10
		fi
	fi
	if [ "$policy_created" = 1 ]; then rm -f "$POLICY"; policy_created=0; fi
fi
for c in swaks openssl python3 dovecot doveconf doveadm postfix postconf sendmail; do
	command -v "$c" >/dev/null || die "$c is missing after the install"
done
compgen -G "/usr/lib/*/sasl2/libplain.so*" >/dev/null ||
	die "Cyrus SASL's PLAIN plugin (libsasl2-modules) is missing: Postfix's smtp client could not log in"

# ---------------------------------------------------------------------------
# Build larkpost, helpers.
work=$(mktemp -d /tmp/larkpost-auth.XXXXXX)
chmod 755 "$work" # dovecot's unprivileged auth process reads its users file in here
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

HOST=mx.auth.test
stamp=$(date +%s)-$$

# ---------------------------------------------------------------------------
# 2. A CA and a certificate for $HOST, as an admin would have them.
certs=$work/certs
mkdir -p "$certs"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=Interop Auth CA" -days 30 \
	-keyout "$certs/ca.key" -out "$certs/ca.crt" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$HOST" \
	-keyout "$certs/$HOST.key" -out "$certs/$HOST.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$HOST" >"$certs/$HOST.ext"
openssl x509 -req -in "$certs/$HOST.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" -CAcreateserial \
	-days 30 -extfile "$certs/$HOST.ext" -out "$certs/$HOST.leaf" 2>/dev/null
cat "$certs/$HOST.leaf" "$certs/ca.crt" >"$certs/$HOST.crt"
chmod 644 "$certs/ca.crt" # Postfix's smtp client reads it
openssl verify -CAfile "$certs/ca.crt" "$certs/$HOST.leaf" >/dev/null || die "the new certificate does not verify"
tlsv=(--tls-verify --tls-ca-path "$certs/ca.crt" --tls-sni "$HOST") # swaks: verify larkpost's certificate

# ---------------------------------------------------------------------------
# 3. Dovecot: auth only (protocols = none), a passwd-file user, the
#    auth-client socket open to larkpost.
user_a=alice pass_a="Al1ce&Dovecot-$$"
dv=$work/dovecot
install -d -m 755 "$dv" "$dv/run" "$dv/state"
printf '%s:%s::::::\n' "$user_a" "$(doveadm pw -s SHA512-CRYPT -p "$pass_a")" >"$dv/users"
chmod 644 "$dv/users"
cat >"$dv/dovecot.conf" <<CONF
# Throw-away Dovecot for larkpost's AUTH interop test (generated).
instance_name = larkpost-interop-auth
base_dir = $dv/run
state_dir = $dv/state
log_path = $dv/dovecot.log
protocols = none
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain login
auth_verbose = yes
passdb {
  driver = passwd-file
  args = username_format=%u $dv/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}
service auth {
  unix_listener auth-client {
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
auth_sock=$dv/run/auth-client
dovecot_up() { kill -0 "$dovecot_pid" 2>/dev/null && [ -S "$auth_sock" ]; }
if ! wait_for 15 dovecot_up; then
	cat "$dv/dovecot.log" 2>/dev/null
	die "dovecot did not come up (auth socket $auth_sock) within 15 s"
fi
bad=$(ss -ltnpH 2>/dev/null | grep -E "pid=($(tree_pids "$dovecot_pid" | paste -sd'|'))," | awk '{print $4}' || true)
[ -z "$bad" ] || die "dovecot listens on TCP address(es) it should not: ${bad//$'\n'/ }"

# ---------------------------------------------------------------------------
# 4. larkpost A (Dovecot) and B (passwd-file), each with smtp (25),
#    submission (587: STARTTLS and AUTH required) and smtps (465).
user_b=bob pass_b="b0b's pass:word $$"      # {SHA512-CRYPT}; a space and a colon
user_c=carol pass_c="Car0l-Blowfish-$$"     # {BLF-CRYPT}
{
	printf '%s:%s\n' "$user_b" "$(doveadm pw -s SHA512-CRYPT -p "$pass_b")"
	printf '%s:%s:1000:1000::/home/%s::\n' "$user_c" "$(doveadm pw -s BLF-CRYPT -p "$pass_c")" "$user_c"
} >"$work/b-users.passwd"
if ! grep -q "^$user_b:{SHA512-CRYPT}\\\$6\\\$" "$work/b-users.passwd" || ! grep -q "^$user_c:{BLF-CRYPT}\\\$2" "$work/b-users.passwd"; then
	die "doveadm pw did not write the expected hashes: $(cat "$work/b-users.passwd")"
fi
printf '%s@%s %s\n%s@%s %s\n' "$user_b" "$HOST" "$user_b" "$user_c" "$HOST" "$user_c" >"$work/b-senders"

declare -A SMTP SUB SMTPS
for n in A B; do SMTP[$n]=$(free_port) SUB[$n]=$(free_port) SMTPS[$n]=$(free_port); done
common() { # NAME: the settings A and B share
	cat <<STAR
    allow_root = True,   # these runs are about AUTH, not the root split (.ci/privs.sh)
    hostname = "$HOST",
    data_dir = "$work/$1-data",
    networks = ["192.0.2.0/24"],   # loopback is an outside client here
    resolvers = [],
    smtpd_tls_cert_file = "$certs/$HOST.crt",
    smtpd_tls_key_file = "$certs/$HOST.key",
STAR
}
listeners() { # NAME: smtp, submission and smtps on 127.0.0.1
	cat <<STAR
    listen = {
        "smtp": "127.0.0.1:${SMTP[$1]}",
        "submission": {"addr": "127.0.0.1:${SUB[$1]}", "tls_security_level": "encrypt",
                       "sasl_auth_enable": True, "require_auth": True},
        "smtps": {"addr": "127.0.0.1:${SMTPS[$1]}", "tls_wrappermode": True,
                  "sasl_auth_enable": True, "require_auth": True},
    },
STAR
}
{
	echo "config("
	common A
	cat <<STAR
    smtpd_sasl_auth_enable = True,   # global: port 25 offers AUTH too, after STARTTLS
    smtpd_sasl_type = "dovecot",
    smtpd_sasl_path = "$auth_sock",
STAR
	listeners A
	echo ")"
} >"$work/A.star"
{
	echo "config("
	common B
	cat <<STAR
    smtpd_sasl_type = "passwd-file",   # the default; only the listeners offer AUTH
    smtpd_sasl_path = "$work/b-users.passwd",
    reject_sender_login_mismatch = True,
    smtpd_sender_login_maps = "texthash:$work/b-senders",
STAR
	listeners B
	echo ")"
} >"$work/B.star"

start_larkpost() { # NAME: check and start $work/NAME.star, log in $work/NAME.log
	local name=$1
	"$work/larkpost" check -c "$work/$name.star" >"$work/$name.check" 2>&1 || { cat "$work/$name.check"; die "larkpost check failed for $name.star"; }
	"$work/larkpost" serve -c "$work/$name.star" 2>"$work/$name.log" &
	larkpids+=($!)
	# shellcheck disable=SC2016 # eval expands it, on every try
	if ! wait_for 15 eval '[ "$(grep -c "listening on" "$work/$name.log")" -ge 3 ]'; then
		cat "$work/$name.log"
		die "larkpost ($name) did not start its three listeners within 15 s"
	fi
}
start_larkpost A
start_larkpost B

# ---------------------------------------------------------------------------
# Checks.
swx() { # OUT ARGS...: swaks, bounded in time
	local out=$1; shift
	timeout 40 swaks --timeout 15 --helo client.auth.test "$@" >"$out" 2>&1
}
msg_file=
find_msg() { # NAME USER SUBJECT: a message with SUBJECT in USER's Maildir -> $msg_file
	local f
	f=$(grep -rlF -- "Subject: $3" "$work/$1-data/mail/$2/new" 2>/dev/null | head -n1)
	[ -n "$f" ] && msg_file=$f
}
delivered() { # NAME USER SUBJECT MECH LOGIN: arrived with ESMTPSA; the queue's client= line names the login
	local name=$1 user=$2 subj=$3 mech=$4 login=$5 id
	msg_file=
	if ! wait_for 15 find_msg "$name" "$user" "$subj"; then
		echo "no message \"$subj\" in $name-data/mail/$user/new within 15 s"; return 1
	fi
	id=$(grep -Eo "with ESMTPSA id [0-9A-Za-z]+" "$msg_file" | head -n1 | awk '{print $4}')
	if [ -z "$id" ]; then
		echo "no 'with ESMTPSA id' in $msg_file:"; sed -n '1,/^$/p' "$msg_file"; return 1
	fi
	if ! wait_for 5 log_has "$work/$name.log" "$id: client=localhost\[127\.0\.0\.1\], sasl_method=$mech, sasl_username=$login\b"; then
		echo "no '$id: client=localhost[127.0.0.1], sasl_method=$mech, sasl_username=$login' in $name.log"
		grep -F "$id" "$work/$name.log"; return 1
	fi
}
rcpt_reply() { # FILE ADDR: the reply line swaks got to RCPT TO:<ADDR>
	awk -v r="RCPT TO:<$2>" 'found { print; exit } index($0, r) { found = 1 }' "$1"
}

suite() { # NAME SENDER-FOR-USER... : the swaks and smtplib checks of one larkpost
	local name=$1 sub=${SUB[$1]} smtp=${SMTP[$1]} smtps=${SMTPS[$1]} users pw user pass mech subj out sender
	echo "== larkpost $name (${2}): submission 127.0.0.1:$sub, smtps 127.0.0.1:$smtps, smtp 127.0.0.1:$smtp"
	shift 2
	users=("$@") # user=password pairs, the first one is the main user
	user=${users[0]%%=*} pass=${users[0]#*=}
	sender=$user@$HOST

	# Right passwords, PLAIN and LOGIN, over STARTTLS on the submission port.
	for pw in "${users[@]}"; do
		for mech in PLAIN LOGIN; do
			local u=${pw%%=*} p=${pw#*=}
			subj="swaks $mech $u via $name submission $stamp"
			out=$work/$name-swaks-$u-$mech.txt
			if swx "$out" --server "127.0.0.1:$sub" --tls "${tlsv[@]}" --auth "$mech" --auth-user "$u" --auth-password "$p" \
				--from "$u@$HOST" --to "$u@$HOST" --header "Subject: $subj" --body "sent by swaks --auth $mech" &&
				grep -q "^ *<~ *235 " "$out" && delivered "$name" "$u" "$subj" "$mech" "$u" >>"$out"; then
				ok "$name: swaks --tls --auth $mech $u on submission: 235, delivered with ESMTPSA, log sasl_method=$mech, sasl_username=$u"
			else
				fail "$name: swaks --tls --auth $mech $u on submission" "$name"; cat "$out"
			fi
		done
	done

	# A wrong password: 535 5.7.8, logged (without the password: see the end).
	out=$work/$name-swaks-wrong.txt
	if ! swx "$out" --server "127.0.0.1:$sub" --tls "${tlsv[@]}" --auth PLAIN --auth-user "$user" --auth-password "wrong-$pass" \
		--from "$sender" --to "$user@$HOST" &&
		grep -Eq "^ *<~\* *535 5\.7\.8 " "$out" &&
		wait_for 5 log_has "$work/$name.log" "\[127\.0\.0\.1\]: SASL PLAIN authentication failed: .*sasl_username=$user\b"; then
		ok "$name: wrong password: 535 5.7.8, 'SASL PLAIN authentication failed' logged"
	else
		fail "$name: wrong password gets 535 5.7.8 and is logged" "$name"; cat "$out"
	fi
	if [ "$name" = A ]; then
		if wait_for 5 log_has "$dv/dovecot.log" "passwd-file\($user,127\.0\.0\.1[,)].*[Pp]assword mismatch"; then
			ok "A: Dovecot checked the wrong password: its log has the mismatch for $user from 127.0.0.1"
		else
			fail "A: Dovecot's log shows the mismatch for $user from 127.0.0.1" A dovecot
		fi
	fi

	# No AUTH before STARTTLS.
	out=$work/$name-swaks-notls.txt
	if ! swx "$out" --server "127.0.0.1:$sub" --auth PLAIN --auth-user "$user" --auth-password "$pass" \
		--from "$sender" --to "$user@$HOST" &&
		grep -q "^ *<- *250-STARTTLS" "$out" && ! grep -Eq "^ *<- *250[- ]AUTH" "$out" &&
		grep -q "did not advertise authentication" "$out"; then
		ok "$name: submission offers STARTTLS but no AUTH before it (swaks --auth without --tls fails)"
	else
		fail "$name: no AUTH before STARTTLS" "$name"; cat "$out"
	fi

	# SMTPS (implicit TLS) with AUTH.
	subj="swaks tlsc $user via $name smtps $stamp"
	out=$work/$name-swaks-smtps.txt
	if swx "$out" --server "127.0.0.1:$smtps" --tlsc "${tlsv[@]}" --auth PLAIN --auth-user "$user" --auth-password "$pass" \
		--from "$sender" --to "$user@$HOST" --header "Subject: $subj" &&
		delivered "$name" "$user" "$subj" PLAIN "$user" >>"$out"; then
		ok "$name: swaks --tlsc --auth PLAIN on smtps: delivered with ESMTPSA"
	else
		fail "$name: swaks --tlsc --auth on smtps" "$name"; cat "$out"
	fi

	# require_auth: MAIL before AUTH is refused on submission.
	out=$work/$name-swaks-noauth.txt
	if ! swx "$out" --server "127.0.0.1:$sub" --tls "${tlsv[@]}" --from "ann@example.org" --to "$user@$HOST" &&
		grep -Eq "^ *<~\* *530 5\.7\.0 Authentication required" "$out"; then
		ok "$name: require_auth: MAIL without AUTH on submission gets 530 5.7.0"
	else
		fail "$name: require_auth on submission" "$name"; cat "$out"
	fi

	# Relaying: allowed after AUTH, denied without it on port 25.
	local far="someone-$name@elsewhere.example" reply
	out=$work/$name-swaks-relay.txt
	swx "$out" --server "127.0.0.1:$sub" --tls "${tlsv[@]}" --auth LOGIN --auth-user "$user" --auth-password "$pass" \
		--from "$sender" --to "$far" --quit-after RCPT || true
	reply=$(rcpt_reply "$out" "$far")
	if grep -q "^ *<~ *235 " "$out" && [[ $reply =~ ^\ *\<~\ *250\  ]]; then
		read -r reply <<<"${reply#*<~}"
		ok "$name: relay to $far after AUTH: RCPT accepted ($reply)"
	else
		fail "$name: relay after AUTH (RCPT reply: '$reply')" "$name"; cat "$out"
	fi
	out=$work/$name-swaks-relay25.txt
	if ! swx "$out" --server "127.0.0.1:$smtp" --from "ann@example.org" --to "$far" &&
		grep -q "554 5.7.1 <$far>: Relay access denied" "$out"; then
		ok "$name: relay without AUTH on port 25: 554 5.7.1 Relay access denied"
	else
		fail "$name: relay denied without AUTH on port 25" "$name"; cat "$out"
	fi

	# Python smtplib: EHLO before/after STARTTLS, starttls()+login(),
	# a wrong password, SMTP_SSL+login().
	out=$work/$name-py.txt
	local auth25=0
	[ "$name" = A ] && auth25=1
	timeout 90 python3 - "$sub" "$smtps" "$smtp" "$certs/ca.crt" "$HOST" "$user" "$pass" "$name" "$stamp" "$auth25" >"$out" 2>&1 <<'PY' || true
import smtplib, socket, ssl, sys
sub, smtps, smtp = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ca, host, user, pw, name, stamp, auth25 = sys.argv[4:11]
ctx = ssl.create_default_context(cafile=ca)
def check(ok, what, detail=""):
    print(("PASS: " if ok else "FAIL: ") + name + ": " + what + ("" if ok or not detail else ": " + str(detail)), flush=True)
def plain(port):
    s = smtplib.SMTP("127.0.0.1", port, local_hostname="py.auth.test", timeout=20)
    s._host = host  # the name verified against the certificate
    return s
def mechs(s):
    return set(s.esmtp_features.get("auth", "").split())
class SSL(smtplib.SMTP_SSL):
    def _get_socket(self, h, port, timeout):
        sock = socket.create_connection((h, port), timeout)
        return self.context.wrap_socket(sock, server_hostname=host)
msg = lambda subj: (f"From: {user}@{host}\r\nTo: {user}@{host}\r\nSubject: {subj}\r\n\r\nsent by smtplib\r\n").encode()

try:
    with plain(sub) as s:
        s.ehlo()
        before = mechs(s)
        s.starttls(context=ctx)
        s.ehlo()
        after = mechs(s)
    check(not before and s.does_esmtp and after == {"PLAIN", "LOGIN"},
          "EHLO on submission: no AUTH before STARTTLS, AUTH PLAIN LOGIN after", f"before={before} after={after}")
    with plain(smtp) as s:
        s.starttls(context=ctx)
        s.ehlo()
        got = mechs(s)
    want = {"PLAIN", "LOGIN"} if auth25 == "1" else set()
    check(got == want, "port 25 after STARTTLS offers AUTH " + ("(global smtpd_sasl_auth_enable)" if want else "not at all (listener-only AUTH)"), f"AUTH={got}")
except Exception as e:
    check(False, "EHLO checks", repr(e))

try:
    with plain(sub) as s:
        s.starttls(context=ctx)
        code, resp = s.login(user, pw)
        refused = s.sendmail(f"{user}@{host}", [f"{user}@{host}"], msg(f"smtplib starttls {name} {stamp}"))
    check(code == 235 and not refused, "smtplib starttls() + login() + sendmail", f"{code} {resp} {refused}")
except Exception as e:
    check(False, "smtplib starttls() + login() + sendmail", repr(e))

try:
    with plain(sub) as s:
        s.starttls(context=ctx)
        try:
            s.login(user, "wrong-" + pw)
            check(False, "smtplib login() with a wrong password raises SMTPAuthenticationError", "login succeeded")
        except smtplib.SMTPAuthenticationError as e:
            check(e.smtp_code == 535, "smtplib login() with a wrong password raises SMTPAuthenticationError 535", e)
except Exception as e:
    check(False, "smtplib login() with a wrong password", repr(e))

try:
    with SSL("127.0.0.1", smtps, local_hostname="py.auth.test", context=ctx, timeout=20) as s:
        code, resp = s.login(user, pw)
        refused = s.sendmail(f"{user}@{host}", [f"{user}@{host}"], msg(f"smtplib smtps {name} {stamp}"))
    check(code == 235 and not refused, "smtplib SMTP_SSL + login() + sendmail", f"{code} {resp} {refused}")
except Exception as e:
    check(False, "smtplib SMTP_SSL + login() + sendmail", repr(e))
print("python done")
PY
	while IFS= read -r line; do
		case $line in
		"PASS: "*) ok "${line#PASS: }" ;;
		"FAIL: "*) fail "${line#FAIL: }" "$name" ;;
		esac
	done <"$out"
	grep -qx "python done" "$out" || { fail "$name: python checks ran to the end" "$name"; grep -Ev '^(PASS|FAIL): ' "$out" | tail -n 30; }
	for what in starttls smtps; do
		if delivered "$name" "$user" "smtplib $what $name $stamp" PLAIN "$user" >"$out.$what" 2>&1; then
			ok "$name: the smtplib $what message is delivered with ESMTPSA, log sasl_method=PLAIN, sasl_username=$user"
		else
			fail "$name: the smtplib $what message is delivered with ESMTPSA and the login logged" "$name"; cat "$out.$what"
		fi
	done
}

suite A "smtpd_sasl_type = dovecot" "$user_a=$pass_a"
suite B "smtpd_sasl_type = passwd-file, SHA512-CRYPT and BLF-CRYPT" "$user_b=$pass_b" "$user_c=$pass_c"

# B: reject_sender_login_mismatch with smtpd_sender_login_maps.
out=$work/B-swaks-mismatch.txt
if ! swx "$out" --server "127.0.0.1:${SUB[B]}" --tls "${tlsv[@]}" --auth PLAIN --auth-user "$user_b" --auth-password "$pass_b" \
	--from "$user_c@$HOST" --to "$user_b@$HOST" &&
	grep -q "553 5.7.1 <$user_c@$HOST>: Sender address rejected: not owned by user $user_b" "$out"; then
	ok "B: reject_sender_login_mismatch: $user_b may not send as $user_c@$HOST (553 5.7.1)"
else
	fail "B: reject_sender_login_mismatch" B; cat "$out"
fi

# ---------------------------------------------------------------------------
# 5. Debian's Postfix relays through larkpost A's submission port:
#    relayhost, smtp_tls_security_level = encrypt, smtp_sasl_*.
echo "== postfix -> larkpost A submission (relayhost [127.0.0.1]:${SUB[A]}, SASL as $user_a)"
postfix_log=$(postconf -h maillog_file 2>/dev/null || true)
[ -n "$postfix_log" ] || postfix_log=$LOG_DIR/postfix.log
postfix_log_start=$(($({ wc -l <"$postfix_log"; } 2>/dev/null || echo 0) + 1))
maincf_copy=$work/main.cf.orig
cp -p "$maincf" "$maincf_copy"
maincf_saved=$maincf_copy
printf '[127.0.0.1]:%s %s:%s\n' "${SUB[A]}" "$user_a" "$pass_a" >"$work/sasl_passwd"
chmod 600 "$work/sasl_passwd"
postconf -e \
	"relayhost = [127.0.0.1]:${SUB[A]}" \
	"default_transport = smtp" \
	"smtp_tls_security_level = encrypt" \
	"smtp_tls_CAfile = $certs/ca.crt" \
	"smtp_tls_loglevel = 1" \
	"smtp_sasl_auth_enable = yes" \
	"smtp_sasl_password_maps = texthash:$work/sasl_passwd" \
	"smtp_sasl_security_options = noanonymous" \
	"smtp_sasl_tls_security_options = noanonymous"
postfix check >"$work/postfix-check.txt" 2>&1 || { cat "$work/postfix-check.txt"; die "postfix check fails with the test settings"; }
if timeout 10 "${postfix_ctl[@]}" status >/dev/null 2>&1; then
	say "postfix already running: reloading it with the test settings, and again when main.cf is back"
	postfix_reloaded=1
	timeout 30 postfix reload >/dev/null 2>&1 || die "postfix reload failed"
	sleep 1
else
	timeout 60 "${postfix_ctl[@]}" start || die "could not start postfix with postfix-ctl.sh"
	postfix_started=1
fi
pf_sender="interop-auth-$stamp@localhost"
subj_pf="postfix sasl client via A $stamp"
if timeout 30 sendmail -i -f "$pf_sender" "$user_a@$HOST" >"$work/sendmail.txt" 2>&1 <<MSG &&
From: $pf_sender
To: $user_a@$HOST
Subject: $subj_pf
Message-Id: <pf-$stamp@interop-auth.test>

submitted with Postfix's sendmail, relayed with SMTP AUTH
MSG
	delivered A "$user_a" "$subj_pf" PLAIN "$user_a" >>"$work/sendmail.txt"; then
	ok "postfix (relayhost, smtp_sasl_auth_enable, TLS encrypt) -> larkpost A: delivered with ESMTPSA, log sasl_username=$user_a"
else
	fail "postfix relays through larkpost A's submission port with SASL" A postfix; cat "$work/sendmail.txt"
	# Do not leave it queued for the restored config to bounce.
	timeout 10 postqueue -j 2>/dev/null | python3 -c '
import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("sender") == sys.argv[1]: print(m["queue_id"])' "$pf_sender" | postsuper -d - >/dev/null 2>&1 || true
fi
pf_re="to=<$user_a@$HOST>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:${SUB[A]},.* status=sent"
tls_re="(Trusted|Verified) TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:${SUB[A]}"
pf_log() { tail -n +"$postfix_log_start" "$postfix_log" 2>/dev/null | grep -Eq -- "$1"; }
if wait_for 10 pf_log "$pf_re" && pf_log "$tls_re"; then
	ok "postfix logs a trusted TLS connection to larkpost and status=sent"
else
	fail "postfix logs a trusted TLS connection to larkpost and status=sent" postfix
fi
restore_postfix
if cmp -s "$maincf_copy" "$maincf"; then
	ok "postfix stopped or reloaded, $maincf restored byte for byte"
else
	fail "$maincf restored byte for byte"
	diff "$maincf_copy" "$maincf" || true
	maincf_saved=$maincf_copy # try again in the trap; keep the copy
fi

# ---------------------------------------------------------------------------
# 6. Password guessing: with the default smtpd_sasl_failure_limit (5), wrong
#    passwords from 127.0.0.1 end in 421 4.7.0; then even the right one is
#    refused from 127.0.0.1, and accepted from 127.0.0.2. Last, as it
#    blocks 127.0.0.1.
brute() { # NAME USER PASS
	local name=$1 out=$work/$1-brute.txt
	echo "== larkpost $name: password guessing from 127.0.0.1"
	timeout 90 python3 - "${SUB[$name]}" "$certs/ca.crt" "$HOST" "$2" "$3" "$name" >"$out" 2>&1 <<'PY' || true
import base64, smtplib, ssl, sys
port, ca, host, user, pw, name = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
ctx = ssl.create_default_context(cafile=ca)
def check(ok, what, detail=""):
    print(("PASS: " if ok else "FAIL: ") + name + ": " + what + ("" if ok else ": " + str(detail)), flush=True)
def session(src="127.0.0.1"):
    s = smtplib.SMTP("127.0.0.1", port, local_hostname="brute.auth.test", timeout=20, source_address=(src, 0))
    s._host = host
    s.starttls(context=ctx)
    s.ehlo()
    return s
def auth(s, password):
    code, resp = s.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode())
    return code, resp.decode("utf-8", "replace")
def close(s):
    try:
        s.close()
    except Exception:
        pass
try:
    # A success first clears the failures the earlier checks counted.
    s = session()
    code, resp = auth(s, pw)
    close(s)
    check(code == 235, "right password from 127.0.0.1 before guessing: 235", f"{code} {resp}")
    replies, s = [], None
    for i in range(6):
        if s is None:
            s = session()
        code, resp = auth(s, "guess-%d-%s" % (i, pw))
        replies.append((code, resp))
        if code == 421:
            close(s)  # the server ends the session
            s = None
    if s is not None:
        close(s)
    codes = [c for c, _ in replies]
    print("replies:", replies)
    check(codes[:4] == [535] * 4 and codes[4] == 421 and replies[4][1].startswith("4.7.0") and codes[5] == 454,
          "6 wrong passwords: 535 x4, then 421 4.7.0 (session ended), then 454 in a new session: %d" % codes[5], replies)
    s = session()
    code, resp = auth(s, pw)
    close(s)
    check(code == 454 and resp.startswith("4.7.0"), f"then the right password from 127.0.0.1 is refused: {code} {resp}", f"{code} {resp}")
    s = session("127.0.0.2")
    code, resp = auth(s, pw)
    close(s)
    check(code == 235, "the right password from 127.0.0.2 works: %d" % code, f"{code} {resp}")
except Exception as e:
    check(False, "password guessing checks", repr(e))
print("python done")
PY
	replies=$(grep '^replies:' "$out" || true)
	while IFS= read -r line; do
		case $line in
		"PASS: "*) ok "${line#PASS: }" ;;
		"FAIL: "*) fail "${line#FAIL: }" "$name"; printf '%s\n' "$replies" ;;
		esac
	done <"$out"
	grep -qx "python done" "$out" || { fail "$name: password guessing checks ran to the end" "$name"; grep -Ev '^(PASS|FAIL): ' "$out" | tail -n 30; }
	if log_has "$work/$name.log" "\[127\.0\.0\.1\]: SASL PLAIN authentication failed: too many failures, blocked for another"; then
		ok "$name: the block is logged ('SASL PLAIN authentication failed: too many failures, blocked for another ...')"
	else
		fail "$name: the block is logged" "$name"
	fi
}
brute A "$user_a" "$pass_a"
brute B "$user_b" "$pass_b"

# No password in any larkpost log line.
leaked=
for n in A B; do
	for p in "$pass_a" "$pass_b" "$pass_c"; do
		grep -qF -- "$p" "$work/$n.log" && leaked+=" $n"
	done
done
if [ -z "$leaked" ]; then ok "no password (right or wrong) in larkpost's logs"; else fail "a password is in the log of:$leaked" A B; fi

# ---------------------------------------------------------------------------
# 7. Logs on failure, summary.
if [ $failed -ne 0 ]; then
	for l in $(printf '%s\n' "${show_logs[@]}" | sort -u); do
		case $l in
		A | B) echo "--- larkpost $l log, last 150 lines"; tail -n 150 "$work/$l.log" ;;
		dovecot) echo "--- dovecot log, last 60 lines"; tail -n 60 "$dv/dovecot.log" 2>/dev/null || true ;;
		postfix) echo "--- postfix log ($postfix_log, this run, last 100 lines)"; tail -n +"$postfix_log_start" "$postfix_log" 2>/dev/null | tail -n 100 ;;
		esac
	done
fi
say "took $((SECONDS - started_at)) s"
echo "interop-auth: $passed passed, $failed failed"
[ $failed -eq 0 ]
