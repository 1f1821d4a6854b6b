#!/bin/sh
# Regenerates the stubs of idl/echo.thrift that the tests use. The generated code is committed: the tests
# need neither generator.
#
#   apachegen/  Apache Thrift Go stubs, by thrift-compiler 0.17.0 (Debian's `thrift-compiler` package); they
#               compile against github.com/apache/thrift v0.25.0.
#   kitexgen/   CloudWeGo Kitex stubs, by the kitex tool v0.12.0 with its embedded thriftgo v0.3.18. The tool
#               is built in a scratch module (go install by version is refused):
#                 go mod init scratch && go get github.com/cloudwego/kitex@v0.12.0 \
#                   github.com/bytedance/sonic@v1.15.5 github.com/bytedance/sonic/loader@v0.5.3 &&
#                   go build github.com/cloudwego/kitex/tool/cmd/kitex
#               and named by KITEX (default: kitex on PATH).
set -eu
cd "$(dirname "$0")"
module=github.com/meltemi-mesh/meltemi/test/interop/thrift
KITEX=${KITEX:-kitex}

rm -rf apachegen kitexgen
mkdir apachegen
thrift --gen "go:package_prefix=$module/apachegen/,skip_remote" -out apachegen idl/echo.thrift

# template=slim: Kitex's default template makes the structs Apache-compatible through
# github.com/cloudwego/kitex/pkg/protocol/bthrift/apache, which compiles only against github.com/apache/thrift
# v0.13 (the tool adds a replace to that version); this module uses v0.25.0 for the Apache peers. The slim
# template leaves that out, and Kitex's own fast codec encodes the structs.
# The kitex tool edits go.mod (it adds a replace of github.com/apache/thrift that this module must not
# have); keep ours.
cp go.mod go.mod.keep
"$KITEX" -module "$module" -gen-path kitexgen -no-dependency-check -thrift template=slim idl/echo.thrift
mv go.mod.keep go.mod

gofmt -w apachegen kitexgen
