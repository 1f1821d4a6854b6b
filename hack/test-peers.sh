#!/usr/bin/env bash
# Installs the servers and tools tests run against, once, and prints the environment that points the tests
# at them (the Makefile evaluates it):
#
#   redis-server          Debian's package, installed with apt-get when missing;
#   iptables, iproute2    Debian's packages, for the interception tests in network namespaces;
#   Envoy's rate limit    github.com/envoyproxy/ratelimit, built from the Go module proxy into
#   service               ~/.cache/meltemi/ratelimit-<version>/ the first time (about 3 minutes).
#
# The version is pinned: the module has no release tags that carry its current code, so it is the pseudo
# version the tests were written against.
set -euo pipefail

RATELIMIT_VERSION=v1.4.1-0.20260122083618-3fb702589d36

GO=${GO:-go}
cache="${XDG_CACHE_HOME:-$HOME/.cache}/meltemi"

log() { echo "test-peers: $*" >&2; }

# Debian packages, by a command each provides: redis-server for the rate limit service; iptables and ip
# (iproute2) for the tests of sidecar interception in network namespaces of their own.
missing=()
for pair in redis-server:redis-server iptables:iptables ip:iproute2; do
	command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]} (apt-get install)"
	sudo=""
	if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
	# A fresh machine may have no package lists yet: update only when the install fails.
	{ $sudo apt-get install -y -qq "${missing[@]}" >&2 ||
		{ $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq "${missing[@]}" >&2; }; } </dev/null
fi
# The package starts a system-wide server on 6379; the tests start their own on ports of their own and
# never touch it.

dir="$cache/ratelimit-$RATELIMIT_VERSION"
bin="$dir/ratelimit"
if [ ! -x "$bin" ]; then
	log "building github.com/envoyproxy/ratelimit $RATELIMIT_VERSION into $dir (once)"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	GOBIN="$tmp" GOFLAGS=-mod=mod "$GO" install "github.com/envoyproxy/ratelimit/src/service_cmd@$RATELIMIT_VERSION" >&2
	mkdir -p "$dir"
	mv "$tmp/service_cmd" "$bin"
fi

echo "MELTEMI_REDIS_SERVER=$(command -v redis-server)"
echo "MELTEMI_RATELIMIT_SERVER=$bin"
