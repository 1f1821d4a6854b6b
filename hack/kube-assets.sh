#!/usr/bin/env bash
# Builds the two binaries envtest runs, kube-apiserver and etcd, from the Go module proxy, into the
# folder that becomes KUBEBUILDER_ASSETS, and prints that folder. Nothing else is downloadable here
# (no release tarballs), so both are compiled from their published modules in scratch modules
# outside the repository. A second run finds the binaries and only prints the folder.
#
# Cold, this takes 10 to 20 minutes on two cores; `make test-kube` runs it.
#
# With --cached it builds nothing: it prints the folder and succeeds if both binaries are there, and
# fails otherwise (CI uses it to decide whether to run the suite).
set -euo pipefail

KUBE_VERSION=1.37.2
# The staging modules (k8s.io/api, apiserver, ...) are published as v0.<minor>.<patch>.
STAGING_VERSION=0.37.2
ETCD_VERSION=3.6.16

GO=${GO:-go}
cache=${MELTEMI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meltemi}
assets="$cache/kube-$KUBE_VERSION"

have_assets() { [ -x "$assets/kube-apiserver" ] && [ -x "$assets/etcd" ]; }

if have_assets; then
	echo "$assets"
	exit 0
fi
if [ "${1:-}" = --cached ]; then
	echo "kube-assets: no kube-apiserver and etcd in $assets" >&2
	exit 1
fi

mkdir -p "$cache"
# Another checkout on this machine may be building the same folder: one build, the others wait.
exec 9>"$cache/kube-$KUBE_VERSION.lock"
if ! flock -n 9; then
	echo "kube-assets: another build of $assets is running; waiting for it" >&2
	flock 9
fi
if have_assets; then
	echo "$assets"
	exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/out"

# The scratch modules must not see the repository's go.work or a caller's GOFLAGS.
export GOWORK=off GOFLAGS=-mod=mod

build_etcd() {
	echo "kube-assets: building etcd v$ETCD_VERSION" >&2
	mkdir -p "$tmp/etcd"
	(
		cd "$tmp/etcd"
		$GO mod init meltemi.invalid/etcd-build >/dev/null 2>&1
		# etcd's modules replace each other by relative path in its own repository, so `go install
		# module@version` refuses them; requiring every one at the same version sidesteps that.
		for m in server api client/pkg client pkg; do
			$GO mod edit -require="go.etcd.io/etcd/$m/v3@v$ETCD_VERSION"
		done
		$GO mod download go.etcd.io/etcd/server/v3
		$GO build -trimpath -ldflags='-s -w' -o "$tmp/out/etcd" go.etcd.io/etcd/server/v3
	)
}

build_apiserver() {
	echo "kube-assets: building kube-apiserver v$KUBE_VERSION" >&2
	mkdir -p "$tmp/kube"
	(
		cd "$tmp/kube"
		$GO mod init meltemi.invalid/kube-build >/dev/null 2>&1
		# k8s.io/kubernetes points its staging modules at ./staging/...; in a scratch module each must
		# be replaced by the same module as published, at the matching version.
		gomod=$($GO mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
		if [ -z "$gomod" ] || [ ! -f "$gomod" ]; then
			echo "kube-assets: cannot find the go.mod of k8s.io/kubernetes@v$KUBE_VERSION" >&2
			exit 1
		fi
		$GO mod edit -require="k8s.io/kubernetes@v$KUBE_VERSION"
		staging=$(sed -n 's|^[[:space:]]*\(k8s\.io/[a-z0-9.-]*\) => \./staging/.*$|\1|p' "$gomod")
		if [ -z "$staging" ]; then
			echo "kube-assets: no staging replacements in $gomod" >&2
			exit 1
		fi
		for m in $staging; do
			$GO mod edit -replace="$m=$m@v$STAGING_VERSION"
		done
		$GO mod download k8s.io/kubernetes
		# The version is stamped as a release build would be, so `kube-apiserver --version` and the
		# /version endpoint tell the truth.
		pkg=k8s.io/component-base/version
		minor=${KUBE_VERSION#*.}
		minor=${minor%%.*}
		$GO build -trimpath \
			-ldflags="-s -w -X $pkg.gitVersion=v$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
			-o "$tmp/out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
	)
}

build_etcd
build_apiserver

# Move in only complete binaries, so an interrupted build is never mistaken for a finished one.
mkdir -p "$assets"
for b in etcd kube-apiserver; do
	mv "$tmp/out/$b" "$assets/$b.tmp"
	mv "$assets/$b.tmp" "$assets/$b"
done
echo "kube-assets: built $assets" >&2
echo "$assets"
