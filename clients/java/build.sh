#!/usr/bin/env bash
# Compiles the Java stubs buf.gen.yaml generates (protoc's java, grpc_java_plugin) against
# Debian's protobuf-java and grpc-java, offline, into clients/java/build/repogate-stubs.jar:
# the check that the generated Java (messages and gRPC service stubs) builds as published.
#
#   clients/java/build.sh            -> clients/java/build/repogate-stubs.jar
#   clients/java/build.sh --missing  prints the Debian packages it needs that are not
#                                    installed (nothing when all are)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/build"

# Debian 12: protobuf-java 3.21 (the protoc that generates), grpc-java 1.41. The plugin's
# @javax.annotation.Generated needs the annotation jar since Java 9 dropped it.
packages=(default-jdk-headless protobuf-compiler protobuf-compiler-grpc-java-plugin libprotobuf-java
  libgrpc-java libguava-java libjsr305-java libgeronimo-annotation-1.3-spec-java)
# shellcheck source=clients/debian-packages.sh
. "$here/../debian-packages.sh"
require_packages clients/java "$@" -- "${packages[@]}"

root="$(cd "$here/../.." && pwd)"
make -C "$root" --no-print-directory stubs >&2
jars=(protobuf grpc-api grpc-context grpc-stub grpc-protobuf grpc-protobuf-lite guava jsr305
  geronimo-annotation-1.3-spec)
classpath="$(printf '/usr/share/java/%s.jar:' "${jars[@]}")"
rm -rf "$out"
mkdir -p "$out/classes"
find "$root/build/stubs/java" -name '*.java' >"$out/sources.txt"
javac -nowarn -encoding UTF-8 -d "$out/classes" -cp "$classpath" @"$out/sources.txt" 2>&1 |
  { grep -v '^Note: ' || true; }
jar --create --file "$out/repogate-stubs.jar" -C "$out/classes" .
echo "clients/java: built $out/repogate-stubs.jar ($(grep -c . "$out/sources.txt") sources)"
