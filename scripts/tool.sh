#!/usr/bin/env bash
# tool.sh NAME — prints the path of a pinned tool, installing it first when the
# version-keyed cache does not hold it yet. Everything comes from the Go module
# proxy with `go install`; the cache lives outside the checkout so fresh clones
# reuse it.
set -euo pipefail

cache="${KEYWAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keyway}/tools"

case "${1:?usage: tool.sh NAME}" in
  buf)                   pkg=github.com/bufbuild/buf/cmd/buf;                         ver=v1.75.0 ;;
  protoc-gen-go)         pkg=google.golang.org/protobuf/cmd/protoc-gen-go;            ver=v1.36.12 ;;
  protoc-gen-connect-go) pkg=connectrpc.com/connect/cmd/protoc-gen-connect-go;        ver=v1.21.1 ;;
  protoc-gen-go-grpc)    pkg=google.golang.org/grpc/cmd/protoc-gen-go-grpc;           ver=v1.6.2 ;;
  nats-server)           pkg=github.com/nats-io/nats-server/v2;                       ver=v2.15.2 ;;
  golangci-lint)         pkg=github.com/golangci/golangci-lint/v2/cmd/golangci-lint;  ver=v2.15.0 ;;
  govulncheck)           pkg=golang.org/x/vuln/cmd/govulncheck;                       ver=v1.9.0 ;;
  # Vault's go.mod carries replace lines that `go install` refuses, so it is
  # built through a wrapper module below. Pinned: v1.21.2–v1.21.4 do not
  # compile from the module proxy (no published vault/sdk matches them).
  vault)                 pkg=github.com/hashicorp/vault;                              ver=v1.21.1 ;;
  *) echo "tool.sh: unknown tool $1" >&2; exit 2 ;;
esac

dir="$cache/$1-$ver"
bin="$dir/$1"
if [ ! -x "$bin" ]; then
  echo "installing $1 $ver into $dir" >&2
  mkdir -p "$dir"
  if [ "$1" = vault ]; then
    # About 20 minutes and 5 GB of memory on 2 cores the first time; the
    # binary and the module cache are reused afterwards.
    echo "building vault $ver from the Go module proxy: about 20 minutes the first time" >&2
    work="$cache/.vault-build-$ver"
    mkdir -p "$work"
    ( cd "$work"
      printf 'module vaultbin\n\ngo 1.26\n' > go.mod
      GOWORK=off GOFLAGS=-mod=mod go get "$pkg@$ver" >&2
      GOWORK=off GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o "$bin.tmp" "$pkg" >&2 )
    mv "$bin.tmp" "$bin"
  else
    # GOWORK=off: the tool's own go.mod decides its dependencies, not ours.
    GOWORK=off GOFLAGS=-mod=mod GOBIN="$dir" go install "$pkg@$ver" >&2
  fi
fi
echo "$bin"
