# Meltemi: build, test, benchmark.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/meltemi-mesh/meltemi/cmd.version=$(VERSION)
FUZZTIME ?= 30s

# Every fuzz target as package:Target, run with their seed corpus by `make test` and fuzzed by `make fuzz`.
FUZZ_TARGETS := $(shell grep -rl --include='*_test.go' '^func Fuzz' codec proxy control 2>/dev/null | \
	xargs -r grep -H -o '^func Fuzz[A-Za-z0-9_]*' | sed 's|/[^/]*_test.go:func |:|' | sort -u)

.PHONY: all build test unit e2e vet fuzz bench bench-codec clean generate demo test-kube manifests

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/meltemi ./cmd/meltemi

## test: everything the project has — vet, unit tests (race detector on, fuzz seed corpora included), e2e
## tests against real peers.
test: vet unit e2e

# The e2e module replaces the root module with this tree, so a change to the root's requirements changes its
# module graph: -mod=mod lets it follow without a hand-run tidy.
# Test modules of their own (real peers' libraries stay out of the product's go.mod): the e2e suite, one
# interop module per protocol family under test/interop, the add-a-protocol example, and the Helm chart's checks
# (test/deploy). test/kube's and test/deploy's tests that need a real API server skip there unless
# KUBEBUILDER_ASSETS is set (make test-kube).
TEST_MODULES := test/e2e test/kube $(patsubst %/go.mod,%,$(wildcard test/interop/*/go.mod)) examples/private-protocol test/deploy

vet:
	$(GO) vet ./...
	@for m in $(TEST_MODULES); do echo "vet $$m"; (cd $$m && $(GO) vet -mod=mod ./...) || exit 1; done

# Servers and tools some tests need (redis-server, Envoy's rate limit service, iptables) are installed by
# hack/test-peers.sh, which prints the variables that tell the tests where they are.
unit:
	@GO="$(GO)" ./hack/test-peers.sh >/dev/null
	$(GO) test -race -count=1 ./...

e2e:
	@peers="$$(GO="$(GO)" ./hack/test-peers.sh)" || exit 1; export $$peers; \
	for m in $(TEST_MODULES); do echo "e2e $$m"; (cd $$m && $(GO) test -mod=mod -count=1 -timeout 15m ./...) || exit 1; done

# Modules whose tests need a real kube-apiserver and etcd; without KUBEBUILDER_ASSETS they skip those tests.
KUBE_TEST_MODULES := test/kube test/deploy

## test-kube: the tests against a real kube-apiserver and etcd (test/kube: the kube source; test/deploy: the Helm
## chart). hack/kube-assets.sh builds both from the Go module proxy on first use (10 to 20 minutes on two cores)
## and caches them under ~/.cache/meltemi.
test-kube:
	@assets=$$(GO="$(GO)" ./hack/kube-assets.sh) && echo "test-kube: KUBEBUILDER_ASSETS=$$assets" && \
	for m in $(KUBE_TEST_MODULES); do echo "test-kube $$m"; \
		(cd $$m && KUBEBUILDER_ASSETS="$$assets" $(GO) test -mod=mod -race -count=1 -timeout 15m ./...) || exit 1; done

## fuzz: run every fuzz target for FUZZTIME each.
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzzing $$name in ./$$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) ./$$pkg || exit 1; \
	done

## bench: codec micro-benchmarks, then the direct / floor / one-hop tables for Dubbo, Thrift and bRPC.
bench: bench-codec
	$(GO) run ./bench/cmd/meshbench run
	$(GO) run ./bench/cmd/meshbench run -protocol thrift
	$(GO) run ./bench/cmd/meshbench run -protocol brpc

bench-codec:
	$(GO) test -run '^$$' -bench . -benchmem ./codec/...

clean:
	rm -rf bin

## demo: two versions of a Dubbo service behind `meltemi mesh`, and a canary release while traffic flows.
## The example is a module of its own, so that dubbo-go stays out of the product's go.mod.
demo: build
	cd examples/dubbo && $(GO) run -mod=mod ./demo -meltemi ../../bin/meltemi

## manifests: copy api/crds into the Helm chart and render the plain manifests, deploy/manifests/meltemi.yaml,
## from the chart with its default values (Helm's Go library, in test/deploy; test/deploy checks both are current).
manifests:
	rm -f deploy/helm/meltemi/crds/*.yaml
	cp api/crds/*.yaml deploy/helm/meltemi/crds/
	cd test/deploy && $(GO) run -mod=mod ./cmd/render -chart ../../deploy/helm/meltemi -o ../../deploy/manifests/meltemi.yaml

## generate: regenerate the Go code and CRD manifests under api/ (installs its own pinned tools), then the
## chart's copy of the CRDs and the plain manifests.
generate:
	GO="$(GO)" ./hack/generate.sh
	$(MAKE) manifests
