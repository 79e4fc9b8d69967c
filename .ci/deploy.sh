#!/usr/bin/env bash
# The deployment files of examples/deploy/: the systemd unit passes
# `systemd-analyze verify` with no complaint about its own lines, both
# configs load and pass both test files with the binary that was built, and,
# where a Docker daemon answers, the image builds and its config loads.
# Every step is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

unit=examples/deploy/larkpost.service
tmp=$(mktemp -d)
image=""
cleanup() {
	if [ -n "$image" ]; then timeout 60 docker image rm -f "$image" >/dev/null 2>&1 || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT

# What the check needs: systemd-analyze, and /bin/kill for the unit's
# ExecReload= (verify checks that every Exec*= command exists).
need=()
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
[ -x /bin/kill ] || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
	echo "installing ${need[*]} (for systemd-analyze verify)"
	if [ "$(id -u)" != 0 ]; then
		echo "cannot install ${need[*]}: not root; install them, or run this as root"; exit 1
	fi
	if ! command -v apt-get >/dev/null 2>&1; then
		echo "cannot install ${need[*]}: no apt-get on this machine"; exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	if ! { timeout 300 apt-get update -qq &&
		timeout 600 apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"$tmp/apt.log" 2>&1; then
		tail -n 20 "$tmp/apt.log"
		echo "cannot install ${need[*]} with apt-get (no network or no package source?)"; exit 1
	fi
	command -v systemd-analyze >/dev/null 2>&1 || { echo "systemd-analyze is still missing after installing systemd"; exit 1; }
fi

# The unit names /usr/local/bin/larkpost, and verify refuses a command that
# does not exist: build it there (CI runs as root), or elsewhere and check
# a copy of the unit that points at it.
if [ "$(id -u)" = 0 ]; then
	bin=/usr/local/bin/larkpost
	verify_unit=$unit
else
	bin=$tmp/bin/larkpost
	mkdir -p "$tmp/unit"
	verify_unit=$tmp/unit/larkpost.service
	sed "s|/usr/local/bin/larkpost|$bin|g" "$unit" >"$verify_unit"
	echo "not root: checking a copy of the unit that runs $bin"
fi
echo "== deploy: build $bin"
timeout 600 go build -o "$bin" ./cmd/larkpost

echo "== deploy: systemd-analyze verify $unit"
systemd-analyze --version | head -n 1
rc=0
out=$(timeout 60 systemd-analyze verify "$verify_unit" 2>&1) || rc=$?
[ -n "$out" ] && echo "$out"
# Lines about other units (the targets it orders itself after) are the
# host's business; any line about this unit is a failure, as verify only
# warns (exit 0) for unknown keys and bad values.
own=$(echo "$out" | grep -F 'larkpost.service' || true)
if [ "$rc" != 0 ] || [ -n "$own" ]; then
	echo "systemd-analyze verify: exit $rc, complaints about the unit:"
	echo "${own:-(none; see above)}"
	exit 1
fi
echo "systemd-analyze verify: no complaint about the unit"

echo "== deploy: both configs with both test files"
for cfg in examples/deploy/larkpost.star examples/deploy/container.star; do
	timeout 60 "$bin" check -c "$cfg"
	timeout 120 "$bin" test -c "$cfg" examples/deploy
done

echo "== deploy: container image"
if ! command -v docker >/dev/null 2>&1; then
	echo "docker not available here: the image is not built in CI (no docker command)"
elif ! timeout 30 docker info >/dev/null 2>&1; then
	echo "docker not available here: the image is not built in CI (the docker command finds no daemon)"
else
	image=larkpost-deploy-ci:$$
	timeout 1200 docker build -q -f examples/deploy/Dockerfile -t "$image" .
	user=$(timeout 30 docker image inspect -f '{{.Config.User}}' "$image")
	if [ "$user" != 65532:65532 ]; then
		echo "the image runs as \"$user\", not 65532:65532 (nonroot)"; exit 1
	fi
	timeout 120 docker run --rm "$image" check -c /etc/larkpost/larkpost.star
fi
echo "deploy: ok"
