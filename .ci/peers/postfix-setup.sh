#!/usr/bin/env bash
# postfix-setup.sh - install and configure Debian's Postfix as the peer of
# larkpost's CI interop test (.ci/interop-peers.sh): smtpd on
# 127.0.0.1:$POSTFIX_PORT only, $BENCH_DOMAIN delivered locally to
# ~$BENCH_USER/Maildir/ (see postfix.env). Idempotent; Debian 12; run as root.
# No daemon is left running: start/stop Postfix with postfix-ctl.sh.
#
# Adapted from the project's MTA bench scripts (peers-setup.sh), keeping only
# the Postfix part the interop test uses.
#
# Options (environment):
#   SKIP_APT_UPDATE=1   do not run apt-get update first
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=postfix.env
. "$HERE/postfix.env"

log() { printf '[postfix-setup] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
command -v apt-get >/dev/null || die "needs a Debian system (apt-get)"
export DEBIAN_FRONTEND=noninteractive

# --------------------------------------------------------------------------
# 0. Keep the package install from starting Postfix on port 25:
#    invoke-rc.d / deb-systemd-invoke honour policy-rc.d (exit 101 = deny).
#    An existing policy-rc.d is left alone.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
	printf '#!/bin/sh\n# temporary, created by larkpost .ci/peers/postfix-setup.sh\nexit 101\n' >"$POLICY"
	chmod 755 "$POLICY"
	trap 'rm -f "$POLICY"' EXIT
	log "installed a temporary $POLICY (removed on exit)"
fi

# --------------------------------------------------------------------------
# 1. Package. ssl-cert (a dependency of postfix) makes the snakeoil
#    certificate Debian's main.cf uses, so smtpd offers STARTTLS.
if [ "${SKIP_APT_UPDATE:-0}" != 1 ]; then
	log "apt-get update"
	apt-get update -qq
fi

mailname=$( { [ -s /etc/mailname ] && cat /etc/mailname; } || hostname --fqdn 2>/dev/null || hostname)
debconf-set-selections <<DEBCONF
postfix postfix/main_mailer_type select Local only
postfix postfix/mailname string $mailname
DEBCONF

log "apt-get install postfix"
apt-get install -y -qq --no-install-recommends postfix >/dev/null

# --------------------------------------------------------------------------
# 2. Stop/disable a Postfix the install may have started on port 25 (only
#    happens where policy-rc.d did not deny it and systemd is running).
if [ -d /run/systemd/system ]; then
	log "systemd: disable --now postfix.service (postfix-ctl.sh starts it by hand)"
	systemctl disable --now postfix.service >/dev/null 2>&1 || true
fi
# A Postfix started outside systemd: its own stop command. (master -t exits
# non-zero while a master holds its pid-file lock.)
if ! /usr/lib/postfix/sbin/master -t 2>/dev/null; then
	log "stopping the running postfix (postfix stop)"
	postfix stop >/dev/null 2>&1 || true
fi

# --------------------------------------------------------------------------
# 3. The local recipient: a system user with a Maildir.
install -d -m 755 "$LOG_DIR"
if ! id "$BENCH_USER" >/dev/null 2>&1; then
	log "creating user $BENCH_USER"
	useradd --create-home --shell /usr/sbin/nologin "$BENCH_USER"
fi
MAILDIR=$(bench_maildir)
for d in "" /cur /new /tmp; do
	install -d -o "$BENCH_USER" -g "$BENCH_USER" -m 700 "$MAILDIR$d"
done

# --------------------------------------------------------------------------
# 4. Postfix: local delivery for $BENCH_DOMAIN to ~/Maildir/, smtpd on
#    127.0.0.1:$POSTFIX_PORT only, log to $LOG_DIR/postfix.log.
log "configuring postfix (127.0.0.1:$POSTFIX_PORT, $BENCH_DOMAIN -> ~$BENCH_USER/Maildir/)"
mydest=$(postconf -h mydestination)
case ", $mydest," in
*", $BENCH_DOMAIN,"*) ;;
*) postconf -e "mydestination = $mydest, $BENCH_DOMAIN" ;;
esac
postconf -e \
	"home_mailbox = Maildir/" \
	"inet_interfaces = loopback-only" \
	"inet_protocols = ipv4" \
	"maillog_file = $LOG_DIR/postfix.log"
# master.cf: no smtpd on *:25, one on 127.0.0.1:$POSTFIX_PORT.
if [ -n "$(postconf -M smtp/inet 2>/dev/null)" ]; then
	postconf -MX smtp/inet
fi
for svc in $(postconf -M 2>/dev/null | awk '$2 == "inet" && $8 == "smtpd" && $1 ~ /^127\.0\.0\.1:/ {print $1}'); do
	[ "$svc" = "127.0.0.1:$POSTFIX_PORT" ] || postconf -MX "$svc/inet"
done
postconf -M "127.0.0.1:$POSTFIX_PORT/inet = 127.0.0.1:$POSTFIX_PORT inet n - y - - smtpd"
[ -f /etc/aliases ] || : >/etc/aliases
newaliases
postfix check

log "done. Start/stop it with: $HERE/postfix-ctl.sh start|stop"
