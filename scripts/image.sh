#!/usr/bin/env bash
# Builds weft's container image, localhost/weft:<version>, as an OCI image archive (a tar of
# an OCI image layout: oci-layout, index.json, blobs/sha256/…), and prints its path:
#
#   scripts/image.sh [OUTPUT]     # default: <target dir>/weft-image-<version>.oci.tar
#   ctr -n k8s.io images import <that file>      # on every node (docs/install.md)
#
# No registry, no podman or docker: nodes import the file, and the DaemonSet
# (deploy/weft.yaml) runs the image with imagePullPolicy IfNotPresent. The binaries come from
# scripts/build.sh (static release builds), or from WEFT_RELEASE_DIR when it is set (a
# directory with weftd, weftctl, weft and weft-ipam built by scripts/build.sh).
#
# One layer: /usr/local/bin/{weftd,weftctl,weft,weft-ipam}, all static, and /usr/sbin/nft
# with the shared libraries it loads, copied from this machine's nftables package: weftd
# runs `nft -f` for a policy table's first build (docs/policy.md), and the image has no
# distribution to take it from. Reproducible: the same binaries give the same archive, byte
# for byte (fixed mtimes and owners, sorted entries, gzip without a name or time stamp).
set -euo pipefail

# The output is named relative to the caller's directory, before the cd below.
out=${1:-}
if [ -n "$out" ]; then
  case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
fi
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/deps.sh
. scripts/lib/deps.sh
ensure_packages jq nftables

log() { echo "== image: $*" >&2; }
die() {
  echo "scripts/image.sh: $*" >&2
  exit 1
}

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)
[ -n "$version" ] || die "no version in Cargo.toml's [workspace.package]"
ref="localhost/weft:$version"
# The image's own mtimes and its `created` time: the epoch unless the caller pins another
# (reproducible-builds.org's variable), never the time of the build.
epoch=${SOURCE_DATE_EPOCH:-0}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) die "no OCI architecture name for $(uname -m)" ;;
esac
[ -n "$out" ] || out="${CARGO_TARGET_DIR:-$PWD/target}/weft-image-$version.oci.tar"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

if [ -n "${WEFT_RELEASE_DIR:-}" ]; then
  bin=$WEFT_RELEASE_DIR
  log "binaries from WEFT_RELEASE_DIR=$bin"
else
  log "building the static release binaries (scripts/build.sh)"
  # weftctl-lab (weft-lab) is not in the image: no need to build it.
  bin=$(scripts/build.sh weft-plugin weft-agent weft-ctl)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/weft-image.XXXXXX")
partial="$out.tmp.$$"
trap 'rm -rf "$work" "$partial"' EXIT
root="$work/rootfs"
mkdir -p "$root/usr/local/bin" "$root/usr/sbin"

for b in weftd weftctl weft weft-ipam; do
  [ -f "$bin/$b" ] || die "$bin/$b is missing (build with scripts/build.sh)"
  # Static: the plugins are copied onto the node and run there, whatever its C library,
  # and weftd must not depend on the libraries that happen to come with nft below.
  linkage=$(ldd "$bin/$b" 2>&1 || true)
  if ! grep -q -e 'statically linked' -e 'not a dynamic executable' <<<"$linkage"; then
    die "$bin/$b is dynamically linked; scripts/build.sh builds static binaries"
  fi
  cp "$bin/$b" "$root/usr/local/bin/$b"
done

# nft and what the dynamic loader maps for it, at the paths ldd names (the loader's own
# search path inside the image): the interpreter line has no "=>".
nft=/usr/sbin/nft
cp "$nft" "$root$nft"
libs=$(ldd "$nft" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
[ -n "$libs" ] || die "ldd found no libraries for $nft"
for lib in $libs; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

# Modes set explicitly, not through the caller's umask: directories and programs 0755, the
# libraries as their package has them (0644, and 0755 for the loader, which the kernel
# executes).
find "$root" -type d -exec chmod 0755 {} +
for lib in $libs; do
  if [ -x "$lib" ]; then chmod 0755 "$root$lib"; else chmod 0644 "$root$lib"; fi
done
chmod 0755 "$root"/usr/local/bin/* "$root$nft"

# A tar of sorted entries with fixed metadata (reproducible-builds.org's recipe): names
# relative to /, without "./", as image layers have them.
reproducible_tar() {
  local dir=$1 file=$2
  shift 2
  tar --create --file="$file" --directory="$dir" --sort=name --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --mtime="@$epoch" --owner=0 --group=0 --numeric-owner "$@"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

blobs="$work/layout/blobs/sha256"
mkdir -p "$blobs"
# Moves a file into the blob store under its digest; prints the digest (hex).
add_blob() {
  local d
  d=$(sha "$1")
  mv "$1" "$blobs/$d"
  echo "$d"
}

log "layer: $(cd "$root" && find . -type f | sed 's,^\.,,' | sort | paste -sd' ' -)"
# shellcheck disable=SC2046 # the top-level names, sorted, as separate arguments
reproducible_tar "$root" "$work/layer.tar" $(cd "$root" && LC_ALL=C ls)
diff_id=$(sha "$work/layer.tar")
gzip -n -9 <"$work/layer.tar" >"$work/layer.tar.gz"
layer_size=$(size "$work/layer.tar.gz")
layer=$(add_blob "$work/layer.tar.gz")

# JSON documents are written compact and with sorted keys: their digests are their bytes.
jq -n -c -S --arg arch "$arch" --arg created "$created" --arg diff "sha256:$diff_id" \
  --arg version "$version" '{
    architecture: $arch, os: "linux", created: $created,
    config: {
      Entrypoint: ["/usr/local/bin/weftd"],
      Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
      Labels: {"org.opencontainers.image.title": "weft",
               "org.opencontainers.image.version": $version}
    },
    rootfs: {type: "layers", diff_ids: [$diff]},
    history: [{created: $created, created_by: "scripts/image.sh"}]
  }' | tr -d '\n' >"$work/config.json"
config_size=$(size "$work/config.json")
config=$(add_blob "$work/config.json")

jq -n -c -S --arg config "sha256:$config" --argjson config_size "$config_size" \
  --arg layer "sha256:$layer" --argjson layer_size "$layer_size" '{
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {mediaType: "application/vnd.oci.image.config.v1+json",
             digest: $config, size: $config_size},
    layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
              digest: $layer, size: $layer_size}]
  }' | tr -d '\n' >"$work/manifest.json"
manifest_size=$(size "$work/manifest.json")
manifest=$(add_blob "$work/manifest.json")

# The name is the index entry's org.opencontainers.image.ref.name. A full reference there is
# what `ctr images import` keeps as the image's name (a bare tag would get an
# "import-<date>" prefix); CRI then finds it by the name the DaemonSet uses.
jq -n -c -S --arg manifest "sha256:$manifest" --argjson size "$manifest_size" \
  --arg arch "$arch" --arg ref "$ref" '{
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json",
                 digest: $manifest, size: $size,
                 platform: {architecture: $arch, os: "linux"},
                 annotations: {"org.opencontainers.image.ref.name": $ref}}]
  }' | tr -d '\n' >"$work/layout/index.json"
printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"
find "$work/layout" -type d -exec chmod 0755 {} +
find "$work/layout" -type f -exec chmod 0644 {} +

mkdir -p "$(dirname "$out")"
reproducible_tar "$work/layout" "$work/image.tar" blobs index.json oci-layout
# Renamed into place: an interrupted run leaves the previous archive, not half of one.
mv "$work/image.tar" "$partial"
mv "$partial" "$out"
log "$ref: manifest sha256:$manifest, $(size "$out") bytes"
echo "$out"
