#!/bin/sh
# Regenerates echopb/echo.pb.go from echopb/echo.proto. The generated file is committed, so tests never need
# protoc. Generated with Debian's protoc (package protobuf-compiler, libprotoc 3.21.12) and protoc-gen-go
# v1.36.12, the google.golang.org/protobuf version of Meltemi's go.mod:
#   apt-get install -y protobuf-compiler
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
set -eu
cd "$(dirname "$0")"
protoc -I echopb --go_out=echopb --go_opt=paths=source_relative echopb/echo.proto
