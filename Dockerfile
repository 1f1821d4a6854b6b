# syntax=docker/dockerfile:1
# The one Meltemi image: the same binary runs the controller (meltemi controller), the proxy (meltemi proxy)
# and the proxy's init container. Build: docker build --build-arg VERSION=$(git describe --tags --always) .

ARG GO_VERSION=1.26.8

# The builder runs on the build machine's own platform and cross-compiles: the binary is pure Go.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
# What make build runs, statically linked (no libc in the runtime image).
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X github.com/meltemi-mesh/meltemi/cmd.version=${VERSION}" \
    -o /out/meltemi ./cmd/meltemi

# No shell, no package manager, no root: a binary and the CA certificates.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="meltemi" \
      org.opencontainers.image.description="Meltemi: control plane and proxy for Dubbo, Thrift, bRPC, tRPC and private layer-7 protocols in a service mesh" \
      org.opencontainers.image.source="https://github.com/meltemi-mesh/meltemi" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/meltemi /usr/local/bin/meltemi
# distroless's nonroot user; the Helm chart runs the controller as it too.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meltemi"]
