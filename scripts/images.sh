#!/usr/bin/env bash
# images.sh [NAME...] — builds one OCI image per Keyway binary, FROM scratch,
# with buildah, and writes each as an OCI archive to images/NAME.tar (the
# default NAMEs: keyway-policy keyway-secrets keyway-proxy keywayctl).
#
# Each image holds the static binary (CGO_ENABLED=0) at /usr/local/bin/NAME
# as its entrypoint, the host's CA bundle at /etc/ssl/certs/ (Go reads the
# system roots there: a Service with an https:// URL and no tls-outbound
# binding is verified against them), an /etc/passwd naming the user
# nonroot, and nothing else: no shell, no package manager. It runs as
# 65532:65532, the user the manifests in deploy/ ask for. Its name is
# keyway/NAME:TAG, TAG from scripts/version.sh tag, as deploy/ names it,
# with the OCI labels org.opencontainers.image.version, .revision, .source.
#
# buildah runs with its own storage (vfs, under the keyway cache) and its
# own signature policy, chroot isolation, and never a registry: nothing
# depends on the host's container configuration.
set -euo pipefail

cd "$(dirname "$0")/.."
root="$PWD"
scripts/debian.sh buildah

names=("$@")
if [ ${#names[@]} -eq 0 ]; then names=(keyway-policy keyway-secrets keyway-proxy keywayctl); fi
declare -A pkgs=(
  [keyway-policy]=./services/policy/cmd/keyway-policy
  [keyway-secrets]=./services/secrets/cmd/keyway-secrets
  [keyway-proxy]=./services/proxy/cmd/keyway-proxy
  [keywayctl]=./cmd/keywayctl
)
for name in "${names[@]}"; do
  if [ -z "${pkgs[$name]:-}" ]; then
    echo "images.sh: no image $name: want one of ${!pkgs[*]}" >&2
    exit 2
  fi
done

version="$(scripts/version.sh version)"
tag="$(scripts/version.sh tag)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
# The source label: $KEYWAY_IMAGE_SOURCE, else the checkout's origin, else
# the domain of the Go module paths (keyway.dev/...).
source="${KEYWAY_IMAGE_SOURCE:-$(git remote get-url origin 2>/dev/null || echo https://keyway.dev)}"

cache="${KEYWAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keyway}/buildah"
mkdir -p "$cache/storage" "$cache/run"
work="$(mktemp -d "${TMPDIR:-/tmp}/keyway-images.XXXXXX")"
containers=()
cleanup() {
  for c in "${containers[@]}"; do if [ -n "$c" ]; then bh rm "$c" >/dev/null 2>&1 || true; fi; done
  rm -rf "$work"
}
trap cleanup EXIT

# Accept any image: we only ever write our own, from scratch, to files.
printf '{"default": [{"type": "insecureAcceptAnything"}]}\n' > "$work/policy.json"
export BUILDAH_ISOLATION=chroot
bh() {
  buildah --storage-driver vfs --root "$cache/storage" --runroot "$cache/run" "$@"
}

echo "building the static binaries (CGO_ENABLED=0), version $version" >&2
mkdir -p "$work/bin"
pkglist=()
for name in "${names[@]}"; do pkglist+=("${pkgs[$name]}"); done
CGO_ENABLED=0 go build -trimpath -ldflags "$(scripts/version.sh ldflags)" -o "$work/bin/" "${pkglist[@]}"

# The files every image shares.
rootfs="$work/rootfs"
mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/usr/local/bin"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$rootfs/etc/group"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
else
  echo "images.sh: no /etc/ssl/certs/ca-certificates.crt on this host (Debian: apt-get install ca-certificates); the images would trust no public CA" >&2
  exit 1
fi
chmod -R u=rwX,go=rX "$rootfs"

mkdir -p images
for name in "${names[@]}"; do
  ref="keyway/$name:$tag"
  ctr="$(bh from --signature-policy "$work/policy.json" scratch)"
  containers+=("$ctr")
  rm -f "$rootfs/usr/local/bin/"*
  install -m 0755 "$work/bin/$name" "$rootfs/usr/local/bin/$name"
  bh copy "$ctr" "$rootfs/" / >/dev/null
  bh config \
    --os linux --arch "$(go env GOARCH)" \
    --user 65532:65532 --workingdir / \
    --entrypoint "[\"/usr/local/bin/$name\"]" --cmd '' \
    --label "org.opencontainers.image.title=$name" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$revision" \
    --label "org.opencontainers.image.source=$source" \
    "$ctr"
  bh commit --quiet --signature-policy "$work/policy.json" --format oci --rm "$ctr" "$ref" >/dev/null
  containers=("${containers[@]/$ctr}")
  rm -f "images/$name.tar"
  bh push --quiet --signature-policy "$work/policy.json" "$ref" "oci-archive:$root/images/$name.tar:$ref"
  # The archive is the product; the copy in buildah's storage only costs disk.
  bh rmi "$ref" >/dev/null
  echo "images/$name.tar  $ref  $(du -h "images/$name.tar" | cut -f1)" >&2
done
