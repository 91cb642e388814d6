#!/usr/bin/env bash
# Generates Go stubs from protos/ and builds the example, offline, in GOPATH
# mode against Debian's Go packages (/usr/share/gocode): nothing is downloaded.
#
#   clients/go/build.sh            -> clients/go/build/repogate-example
#   clients/go/build.sh --missing  prints the Debian packages it needs that are
#                                  not installed (nothing when all are)
#
# The stubs are generated here on every build, never committed: they land in
# build/gopath/src/repogate/v1 (import path "repogate/v1", as the proto package
# repogate.v1). The protos carry no go_package, so each file is mapped with M.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
protos="$here/../../protos"
out="$here/build"
gopath="$out/gopath"

# Debian 12's Go 1.19 and gRPC 1.33. golang/protobuf must be the 1.5 line
# (the 1.3 one, which apt may pick for grpc, cannot marshal APIv2 messages).
packages=(golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev
  golang-google-protobuf-dev golang-google-genproto-dev golang-github-golang-protobuf-1-5-dev)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null | grep -qx installed || missing+=("$package")
done
if [ "${1:-}" = --missing ]; then
  echo "${missing[*]}"
  exit 0
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "clients/go: missing Debian packages: ${missing[*]}" >&2
  exit 1
fi

rm -rf "$gopath"
mkdir -p "$gopath/src"
files=$(cd "$protos" && find repogate -name '*.proto' | LC_ALL=C sort)
maps=""
for f in $files; do maps="$maps,M$f=$(dirname "$f");repogatev1"; done
(cd "$protos" && protoc -I . -I /usr/include \
  --go_out="$gopath/src" --go_opt="paths=source_relative$maps" \
  --go-grpc_out="$gopath/src" --go-grpc_opt="paths=source_relative$maps" \
  $files)

cd "$here/example"
GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$out/cache" \
  go build -o "$out/repogate-example" .
echo "clients/go: built $out/repogate-example"
