#!/bin/sh
# Regenerates echopb/echo.pb.go. Generated with Debian's protoc 3.21 (package protobuf-compiler) and
# protoc-gen-go v1.36.12 (go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12). The tests never
# need either: the generated file is committed. The service is registered by hand with trpc-go's
# server.ServiceDesc (trpc-go's own stub generator, trpc-cmdline, is not used).
set -eu
cd "$(dirname "$0")"
protoc -I echopb --go_out=echopb --go_opt=paths=source_relative echopb/echo.proto
