#!/bin/sh
# Regenerates the Apache Thrift stubs of idl/echo.thrift, by thrift-compiler 0.17.0 (Debian's
# `thrift-compiler` package); they compile against github.com/apache/thrift v0.25.0. The generated code is
# committed: the tests need no generator.
set -eu
cd "$(dirname "$0")"
module=github.com/meltemi-mesh/meltemi/test/interop/ratelimit
rm -rf echogen
mkdir echogen
thrift --gen "go:package_prefix=$module/echogen/,skip_remote" -out echogen idl/echo.thrift
gofmt -w echogen
