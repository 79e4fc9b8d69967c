#!/usr/bin/env bash
# Interop, `larkpost import postfix` against the real Postfix (issue 20).
#
# What is checked:
#  1. Debian's postfix package makes a configuration for each debconf
#     profile ("Internet Site", "Internet with smarthost", "Satellite
#     system", "Local only"): debconf-set-selections + dpkg-reconfigure
#     write /etc/postfix, which is copied to a scratch directory and then
#     restored. A fifth config, .ci/import/seed/, has access, canonical,
#     virtual, transport and relocated tables and restriction lists in the
#     style of the seed documents.
#  2. Each is imported with `larkpost import postfix`, passes
#     `larkpost check`, and its generated tests pass under `larkpost test`.
#  3. Differential: Postfix's smtpd runs each config on a loopback port
#     (its own config_directory, queue and data directory; XCLIENT allowed
#     from 127.0.0.0/8); .ci/import/differential.py plays 100+ generated
#     sender/recipient/client/HELO cases against it and against
#     `larkpost trace` of the imported config, compares the reply class at
#     each stage (with smtpd_delay_reject) and, for accepted recipients,
#     the routing (Postfix's tables through postmap -q/postconf against
#     trace's transport, nexthop and virtual expansion). Differences listed
#     in .ci/import/known-differences.txt are printed and subtracted; any
#     other is a FAIL.
#
# /etc/postfix, /etc/mailname, /etc/aliases and the debconf database are
# restored on exit, and every Postfix this script started is stopped:
# .ci/interop-peers.sh configures the system's Postfix later.
# Installs postfix, swaks and python3 with apt-get when missing. Root only.
#
# Environment: IMPORT_CONFIGS="internet seed" runs a subset (default: all
# five); IMPORT_KEEP=1 keeps the scratch directory (its path is printed).
# For development only: IMPORT_LARKPOST=BIN uses BIN instead of building
# ./cmd/larkpost; IMPORT_HAND_STARS=DIR uses DIR/NAME.star (@DIR@ = the
# config's scratch copy) instead of `larkpost import`, which is then a FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

passed=0 failed=0
ok()   { echo "PASS: $1"; passed=$((passed+1)); }
fail() { echo "FAIL: $1"; failed=$((failed+1)); }
say()  { printf 'interop-import: %s\n' "$*"; }
die()  { echo "FAIL: $*"; echo "interop-import: $passed passed, $((failed + 1)) failed"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (apt-get, dpkg-reconfigure, postfix)"
configs=${IMPORT_CONFIGS:-internet smarthost satellite local seed}
deadline=$(( $(date +%s) + ${IMPORT_TIMEOUT:-480} )) # the whole run stays well under 10 minutes

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-o DPkg::Lock::Timeout=120 -o Acquire::http::Timeout=30 -o Acquire::Retries=1)
POLICY=/usr/sbin/policy-rc.d

# ---------------------------------------------------------------------------
# State for cleanup.
work=
policy_created=0
backed_up=0
mailname_existed=0
started=() # config directories of the Postfix instances this script started

stop_instance() { # DIR: stop the Postfix that runs with config_directory DIR
	local dir=$1 pidf pid
	pidf=$(postconf -c "$dir" -h queue_directory 2>/dev/null)/pid/master.pid
	timeout 20 postfix -c "$dir" stop >/dev/null 2>&1 || true
	[ -r "$pidf" ] || return 0
	pid=$(tr -d ' \n' <"$pidf")
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
	# still there: only if it really is that master (comm "master")
	[ "$(cat "/proc/$pid/comm" 2>/dev/null)" = master ] && kill -KILL "$pid" 2>/dev/null || true
}

restore_etc() {
	[ "$backed_up" = 1 ] || return 0
	rm -rf /etc/postfix && cp -a "$work/backup/postfix" /etc/postfix
	if [ "$mailname_existed" = 1 ]; then cp -a "$work/backup/mailname" /etc/mailname; else rm -f /etc/mailname; fi
	for f in aliases aliases.db; do
		if [ -e "$work/backup/$f" ]; then cp -a "$work/backup/$f" "/etc/$f"; else rm -f "/etc/$f"; fi
	done
	cp -a "$work/backup/config.dat" /var/cache/debconf/config.dat
}

cleanup() {
	local rc=$?
	set +e
	trap '' INT TERM
	for d in "${started[@]}"; do stop_instance "$d"; done
	restore_etc
	[ "$policy_created" = 1 ] && rm -f "$POLICY"
	if [ -n "$work" ]; then
		if [ "${IMPORT_KEEP:-0}" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'die "interrupted by SIGINT"' INT
trap 'die "interrupted by SIGTERM"' TERM

deny_daemon_starts() { # package scripts must not (re)start the system's Postfix
	if [ ! -e "$POLICY" ]; then
		printf '#!/bin/sh\n# temporary, created by larkpost .ci/interop-import.sh\nexit 101\n' >"$POLICY"
		chmod 755 "$POLICY"
		policy_created=1
	fi
}

# ---------------------------------------------------------------------------
# 1. Packages.
need=()
command -v postfix >/dev/null && command -v postmap >/dev/null || need+=(postfix)
command -v swaks >/dev/null || need+=(swaks)
command -v python3 >/dev/null || need+=(python3)
command -v dpkg-reconfigure >/dev/null || need+=(debconf)
if [ ${#need[@]} -gt 0 ]; then
	deny_daemon_starts
	if ! debconf-show postfix 2>/dev/null | grep -q main_mailer_type; then
		# the same first answers as .ci/peers/postfix-setup.sh
		debconf-set-selections <<-DEBCONF
		postfix postfix/main_mailer_type select Local only
		postfix postfix/mailname string $(hostname --fqdn 2>/dev/null || hostname)
		DEBCONF
	fi
	for try in 1 2 3; do
		if timeout 150 apt-get "${APT_OPTS[@]}" update -qq &&
			timeout 150 apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${need[@]}" >/dev/null; then break; fi
		say "apt-get failed (try $try)"; sleep 5
	done
	if [ -d /run/systemd/system ]; then systemctl disable --now postfix.service >/dev/null 2>&1 || true; fi
fi
for c in postfix postconf postmap swaks python3 dpkg-reconfigure debconf-set-selections; do
	command -v "$c" >/dev/null || die "$c is required"
done

work=$(mktemp -d /tmp/interop-import.XXXXXX)
chmod 755 "$work" # Postfix's unprivileged daemons read the tables under it
say "Postfix $(postconf -h mail_version), $(python3 --version)"
if [ -n "${IMPORT_LARKPOST:-}" ]; then
	larkpost=$IMPORT_LARKPOST # development: a given binary instead of this tree's
	say "larkpost is $larkpost (IMPORT_LARKPOST)"
else
	go build -o "$work/larkpost" ./cmd/larkpost
	larkpost=$work/larkpost
fi

# The converter must exist: no silent skip.
import_help=$("$larkpost" import --help 2>&1 || true)
if [[ $import_help == *"unknown command"* ]]; then
	if [ -z "${IMPORT_HAND_STARS:-}" ]; then
		die "larkpost import is missing (\`larkpost import --help\` says: $(head -1 <<<"$import_help"))"
	fi
	fail "larkpost import is missing; using the hand-written configs in $IMPORT_HAND_STARS (development only)"
fi

# ---------------------------------------------------------------------------
# 2. Debian's profiles, from dpkg-reconfigure.
mkdir -p "$work/backup" "$work/cfg"
cp -a /etc/postfix "$work/backup/postfix"
if [ -e /etc/mailname ]; then mailname_existed=1; cp -a /etc/mailname "$work/backup/mailname"; fi
for f in aliases aliases.db; do [ -e "/etc/$f" ] && cp -a "/etc/$f" "$work/backup/$f"; done
cp -a /var/cache/debconf/config.dat "$work/backup/config.dat"
backed_up=1

profile_type() {
	case $1 in
	internet) echo "Internet Site" ;;
	smarthost) echo "Internet with smarthost" ;;
	satellite) echo "Satellite system" ;;
	local) echo "Local only" ;;
	esac
}

make_profile() { # NAME: /etc/postfix as dpkg-reconfigure writes it for NAME, copied to $work/cfg/NAME/src
	local name=$1 type relay dest nets
	type=$(profile_type "$name")
	relay="" dest='$myhostname, localhost.localdomain, localhost'
	nets='127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128'
	case $name in
	internet) dest='$myhostname, mail.example.test, example.test, localhost.localdomain, localhost'
		nets="$nets 10.1.0.0/16" ;;
	smarthost) relay='[smarthost.example.test]:587'; dest='$myhostname, mail.example.test, localhost.localdomain, localhost' ;;
	satellite) relay='relay.example.test'; dest="mail.example.test, $dest" ;;
	local) dest="mail.example.test, $dest" ;;
	esac
	# (mail.example.test first for satellite and local: what Debian's config
	# script proposes when the host name does not end in the mailname.)
	# Without a main.cf the package's config script takes the answers
	# below instead of the current mydestination/mynetworks.
	rm -f /etc/postfix/main.cf
	debconf-set-selections <<-DEBCONF
	postfix postfix/main_mailer_type select $type
	postfix postfix/mailname string mail.example.test
	postfix postfix/relayhost string $relay
	postfix postfix/destinations string $dest
	postfix postfix/mynetworks string $nets
	postfix postfix/root_address string
	postfix postfix/recipient_delim string +
	postfix postfix/protocols select ipv4
	DEBCONF
	deny_daemon_starts
	if ! timeout 120 dpkg-reconfigure -f noninteractive postfix >"$work/reconfigure-$name.log" 2>&1; then
		cat "$work/reconfigure-$name.log"; restore_etc; return 1
	fi
	mkdir -p "$work/cfg/$name"
	cp -a /etc/postfix "$work/cfg/$name/src"
	# myorigin = /etc/mailname: the file goes with the copy (it is
	# restored below), and main.cf names the copy.
	if [ -f /etc/mailname ]; then
		cp /etc/mailname "$work/cfg/$name/src/mailname"
		sed -i "s|/etc/mailname|$work/cfg/$name/src/mailname|g" "$work/cfg/$name/src/main.cf"
	fi
	restore_etc
}

for name in $configs; do
	[ "$name" = seed ] && continue
	if make_profile "$name"; then
		ok "$name: dpkg-reconfigure postfix as \"$(profile_type "$name")\": $(postconf -c "$work/cfg/$name/src" -h mydestination | tr -s ' ')"
	else
		fail "$name: dpkg-reconfigure postfix as \"$(profile_type "$name")\""
	fi
done
if [ "$policy_created" = 1 ]; then rm -f "$POLICY"; policy_created=0; fi
# Everything of the system's is back as it was.
if diff -r "$work/backup/postfix" /etc/postfix >/dev/null; then
	ok "/etc/postfix restored after the profiles"
else
	fail "/etc/postfix differs from before the profiles"; diff -r "$work/backup/postfix" /etc/postfix | head -20
fi

# The seed config: @DIR@ is its scratch directory.
if [[ " $configs " == *" seed "* ]]; then
	mkdir -p "$work/cfg/seed/src"
	for f in .ci/import/seed/*; do
		sed "s|@DIR@|$work/cfg/seed/src|g" "$f" >"$work/cfg/seed/src/$(basename "$f")"
	done
fi

# ---------------------------------------------------------------------------
# 3. Import, check, the generated tests.
for name in $configs; do
	src=$work/cfg/$name/src out=$work/cfg/$name/out
	[ -d "$src" ] || continue
	if [ -n "${IMPORT_HAND_STARS:-}" ]; then
		mkdir -p "$out"
		sed "s|@DIR@|$src|g" "$IMPORT_HAND_STARS/$name.star" >"$out/larkpost.star"
		rc=0
	else
		rc=0
		"$larkpost" import postfix "$src" -o "$out" >"$work/import-$name.log" 2>&1 || rc=$?
		case $rc in
		0) ok "$name: larkpost import postfix: everything converted" ;;
		3) ok "$name: larkpost import postfix: written, the report lists hand work:"
			sed -n '/^## Needs hand work/,/^## /{/^## /d;/^$/d;p}' "$out/IMPORT-REPORT.md" | head -20 | sed 's/^/    /' || true ;;
		*) fail "$name: larkpost import postfix exited $rc"; sed 's/^/    /' "$work/import-$name.log" | head -20; continue ;;
		esac
	fi
	if "$larkpost" check -c "$out/larkpost.star" >"$work/check-$name.log" 2>&1; then
		ok "$name: larkpost check"
	else
		fail "$name: larkpost check"; sed 's/^/    /' "$work/check-$name.log" | head -20; continue
	fi
	if [ -f "$out/postfix_import_test.star" ]; then
		if "$larkpost" test -c "$out/larkpost.star" "$out/postfix_import_test.star" >"$work/test-$name.log" 2>&1; then
			ok "$name: generated tests: $(tail -1 "$work/test-$name.log")"
		else
			fail "$name: generated tests"; sed 's/^/    /' "$work/test-$name.log" | tail -30
		fi
	elif [ -z "${IMPORT_HAND_STARS:-}" ]; then
		fail "$name: no postfix_import_test.star was written"
	fi
done

# ---------------------------------------------------------------------------
# 4. Differential against Postfix's smtpd.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pf_runtime() { # NAME PORT: $work/cfg/NAME/pf, the config Postfix runs: the imported one plus loopback/scratch settings
	local name=$1 port=$2 src=$work/cfg/$1/src pf=$work/cfg/$1/pf f svc
	mkdir -p "$pf"
	cp -a "$src/main.cf" "$src/master.cf" "$pf/"
	[ -f "$src/dynamicmaps.cf" ] && cp -a "$src/dynamicmaps.cf" "$pf/"
	[ -d "$src/dynamicmaps.cf.d" ] && cp -a "$src/dynamicmaps.cf.d" "$pf/"
	# Tables next to main.cf: Postfix reads the .db files postmap makes.
	for f in "$src"/*; do
		case $(basename "$f") in main.cf | master.cf | aliases | *.db | *.proto | dynamicmaps.cf* | makedefs.out | postfix-files* | post-install | postfix-script | sasl) continue ;; esac
		[ -f "$f" ] || continue
		if grep -rqs "hash:$f\b" "$src/main.cf"; then postmap "hash:$f"; fi
	done
	for f in $(postconf -c "$src" -h alias_database | tr ',' ' '); do
		case $f in hash:"$src"/*) postalias "$f" ;; esac
	done
	postconf -c "$pf" -e \
		"inet_interfaces = 127.0.0.1" \
		"inet_protocols = ipv4" \
		"queue_directory = $work/cfg/$name/queue" \
		"data_directory = $work/cfg/$name/data" \
		"maillog_file = $pf/maillog" \
		"maillog_file_prefixes = $pf" \
		"smtpd_authorized_xclient_hosts = 127.0.0.0/8" \
		"smtpd_error_sleep_time = 0" \
		"smtpd_soft_error_limit = 1000" \
		"smtpd_hard_error_limit = 1000" \
		"smtpd_client_connection_rate_limit = 0" \
		"smtpd_tls_security_level = none" \
		"defer_transports = local virtual smtp relay error lmtp" \
		"hopcount_limit = 50"
	# master.cf: no smtpd on *:25, one on 127.0.0.1:PORT; no chroot (the
	# scratch queue directory has no copy of /etc).
	for svc in $(postconf -c "$pf" -M | awk '$2 == "inet" {print $1}'); do postconf -c "$pf" -MX "$svc/inet"; done
	postconf -c "$pf" -M "127.0.0.1:$port/inet = 127.0.0.1:$port inet n - n - - smtpd"
	postconf -c "$pf" -F '*/*/chroot = n'
	mkdir -p "$work/cfg/$name/queue" "$work/cfg/$name/data"
	chown postfix "$work/cfg/$name/data"
	postfix -c "$pf" set-permissions >/dev/null 2>&1 || true
	# postfix(1) logs to syslog or a terminal only: script(1) gives it one.
	script -qc "postfix -c '$pf' check" /dev/null >"$work/pfcheck-$name.log" 2>&1 ||
		{ sed 's/^/    /' "$work/pfcheck-$name.log"; return 1; }
	[ ! -s "$work/pfcheck-$name.log" ] || sed 's/^/    /' "$work/pfcheck-$name.log"
}

pf_start() { # NAME PORT
	local pf=$work/cfg/$1/pf
	started+=("$pf")
	postfix -c "$pf" start >"$work/pfstart-$1.log" 2>&1 || { cat "$work/pfstart-$1.log"; return 1; }
	for _ in $(seq 100); do
		python3 - "$2" 2>/dev/null <<-'PY' && return 0
		import socket, sys
		s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)
		assert s.recv(512).startswith(b"220")
		PY
		sleep 0.2
	done
	echo "smtpd did not answer on 127.0.0.1:$2"; tail -20 "$pf/maillog" 2>/dev/null; return 1
}

for name in $configs; do
	out=$work/cfg/$name/out pf=$work/cfg/$name/pf
	[ -f "$out/larkpost.star" ] || continue
	if [ "$(date +%s)" -gt "$deadline" ]; then fail "$name: differential not run, out of time"; continue; fi
	port=$(free_port)
	if ! pf_runtime "$name" "$port"; then fail "$name: postfix -c $pf check"; continue; fi
	if ! pf_start "$name" "$port"; then fail "$name: postfix -c $pf start"; stop_instance "$pf"; continue; fi
	rc=0
	timeout $((deadline - $(date +%s) + 30)) python3 .ci/import/differential.py \
		--name "$name" --port "$port" --pf "$pf" --star "$out/larkpost.star" \
		--larkpost "$larkpost" --known .ci/import/known-differences.txt \
		--out "$work/diff-$name.txt" || rc=$?
	stop_instance "$pf"
	case $rc in
	0) ok "$(tail -1 "$work/diff-$name.txt")" ;;
	*) fail "$(tail -1 "$work/diff-$name.txt" 2>/dev/null || echo "$name: differential.py exited $rc")" ;;
	esac
done

echo "interop-import: $passed passed, $failed failed"
[ "$failed" = 0 ]
