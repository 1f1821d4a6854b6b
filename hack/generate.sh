#!/usr/bin/env bash
# Regenerates everything generated under api/: Go code from the .proto files, deepcopy functions
# and CRD manifests from the Kubernetes types. Run it through `make generate`. It installs the tools
# it needs, pinned, so two runs anywhere give byte-identical files.
set -euo pipefail

# Versions are pinned because each tool writes its version into what it generates.
PROTOC_GEN_GO_VERSION=v1.36.12
CONTROLLER_GEN_VERSION=v0.23.0
# Debian bookworm's protobuf-compiler; protoc-gen-go records the protoc version in every file.
PROTOC_VERSION="libprotoc 3.21.12"

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
GO=${GO:-go}
tools="$root/bin/tools"
mkdir -p "$tools"

# protoc comes from the system package manager: no Go module provides it.
if ! command -v protoc >/dev/null 2>&1; then
	echo "generate: installing protoc (apt-get install protobuf-compiler)" >&2
	sudo=""
	if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
	# A fresh machine may have no package lists yet: update only when the install fails.
	$sudo apt-get install -y -qq protobuf-compiler >&2 ||
		{ $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq protobuf-compiler >&2; }
fi
if [ "$(protoc --version)" != "$PROTOC_VERSION" ]; then
	echo "generate: need protoc \"$PROTOC_VERSION\", found \"$(protoc --version)\"; its version is written into every .pb.go" >&2
	exit 1
fi

# The Go tools go into bin/tools, so that nothing depends on what happens to be on PATH.
if [ "$("$tools/protoc-gen-go" --version 2>/dev/null)" != "protoc-gen-go $PROTOC_GEN_GO_VERSION" ]; then
	GOBIN="$tools" $GO install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
fi
if [ "$("$tools/controller-gen" --version 2>/dev/null)" != "Version: $CONTROLLER_GEN_VERSION" ]; then
	GOBIN="$tools" $GO install "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_GEN_VERSION"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Envoy's .proto sources are not available, so the files we import are described from the
# descriptors that go-control-plane's Go packages register (see hack/protodescset).
$GO run ./hack/protodescset -o "$tmp/imports.pb"

# The files under api/ import each other relative to api/, e.g. meta_protocol_proxy/config/...
protos=$(cd api && find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)
find api -name '*.pb.go' -delete
# shellcheck disable=SC2086 # one word per file
protoc \
	--descriptor_set_in="$tmp/imports.pb" \
	-I api \
	--plugin=protoc-gen-go="$tools/protoc-gen-go" \
	--go_out=paths=source_relative:api \
	$protos

# The packages of Kubernetes types: every one gets deepcopy functions and CRD manifests.
kube_types=(./api/metaprotocol/... ./api/redis/... ./api/dubbo/...)
"$tools/controller-gen" object "${kube_types[@]/#/paths=}"
rm -f api/crds/*.yaml
# float64 (Percent.value) is what Aeraki's schema uses, so allow it.
"$tools/controller-gen" crd:allowDangerousTypes=true "${kube_types[@]/#/paths=}" output:crd:artifacts:config=api/crds
