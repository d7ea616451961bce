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
# shellcheck source=scripts/lib/oci.sh
. scripts/lib/oci.sh
ensure_packages jq nftables

log() { echo "== image: $*" >&2; }
die() {
  echo "scripts/image.sh: $*" >&2
  exit 1
}

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)
[ -n "$version" ] || die "no version in Cargo.toml's [workspace.package]"
ref="localhost/weft:$version"
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
trap 'rm -rf "$work"' EXIT
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

log "layer: $(cd "$root" && find . -type f | sed 's,^\.,,' | sort | paste -sd' ' -)"
config_json=$(jq -n -c --arg version "$version" '{
  Entrypoint: ["/usr/local/bin/weftd"],
  Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
  Labels: {"org.opencontainers.image.title": "weft",
           "org.opencontainers.image.version": $version}
}')
oci_archive "$root" "$ref" "$out" "$config_json"
echo "$out"
