#!/usr/bin/env bash
# Generates Go stubs from protos/ with `buf generate` (the repository's
# buf.gen.yaml, `make stubs`) and builds the example, offline, in GOPATH mode
# against Debian's Go packages (/usr/share/gocode): nothing is downloaded.
#
#   clients/go/build.sh            -> clients/go/build/repogate-example
#   clients/go/build.sh --missing  prints the Debian packages it needs that are
#                                  not installed (nothing when all are)
#
# The stubs are generated on every build, never committed. protoc-gen-go lays
# them out by their go_package import path (repogate.dev/api/repogate/v1), so
# that tree is the GOPATH's src as it is: no M flags, no path rewriting.
# google.golang.org/genproto (google.api, google.rpc) comes from Debian's.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/build"
gopath="$out/gopath"

# Debian 12's Go 1.19 and gRPC 1.33. golang/protobuf must be the 1.5 line
# (the 1.3 one, which apt may pick for grpc, cannot marshal APIv2 messages).
packages=(golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev
  golang-google-protobuf-dev golang-google-genproto-dev golang-github-golang-protobuf-1-5-dev)
# shellcheck source=clients/debian-packages.sh
. "$here/../debian-packages.sh"
require_packages clients/go "$@" -- "${packages[@]}"

root="$(cd "$here/../.." && pwd)"
make -C "$root" --no-print-directory stubs >&2
rm -rf "$gopath"
mkdir -p "$gopath/src"
cp -r "$root/build/stubs/go/repogate.dev" "$gopath/src/"

cd "$here/example"
GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$out/cache" \
  go build -o "$out/repogate-example" .
echo "clients/go: built $out/repogate-example"
