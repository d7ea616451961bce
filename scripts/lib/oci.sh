# shellcheck shell=bash
# Writes a one-layer OCI image archive (a tar of an OCI image layout: oci-layout,
# index.json, blobs/sha256/…) from a root file system directory, reproducibly: the same tree
# gives the same archive byte for byte (fixed mtimes and owners, sorted entries, gzip
# without a name or time stamp, JSON with sorted keys). `ctr images import` keeps the
# index's ref.name as the image's name. Used by scripts/image.sh (weft's image) and
# scripts/lab-images.sh (the lab's pause and probe images). Sourced, not executed; needs jq.
#
#   oci_archive ROOTFS REF OUT CONFIG_JSON
#
# CONFIG_JSON is the image config's `config` object (Entrypoint, Cmd, Env, Labels).
# The archive is renamed into place: an interrupted run leaves the previous one.

_oci_sha() { sha256sum "$1" | cut -d' ' -f1; }
_oci_size() { stat -c %s "$1"; }

# A tar of sorted entries with fixed metadata (reproducible-builds.org's recipe): names
# relative to the directory, without "./", as image layers have them.
oci_reproducible_tar() {
  local dir=$1 file=$2 epoch=$3
  shift 3
  tar --create --file="$file" --directory="$dir" --sort=name --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --mtime="@$epoch" --owner=0 --group=0 --numeric-owner "$@"
}

oci_arch() {
  case "$(uname -m)" in
    x86_64) echo amd64 ;;
    aarch64) echo arm64 ;;
    *)
      echo "no OCI architecture name for $(uname -m)" >&2
      return 1
      ;;
  esac
}

oci_archive() {
  local root=$1 ref=$2 out=$3 config_json=$4
  local epoch=${SOURCE_DATE_EPOCH:-0} created arch work blobs
  # The image's own mtimes and its `created` time: the epoch unless the caller pins another
  # (reproducible-builds.org's variable), never the time of the build.
  created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
  arch=$(oci_arch)
  work=$(mktemp -d "${TMPDIR:-/tmp}/weft-oci.XXXXXX")
  blobs="$work/layout/blobs/sha256"
  mkdir -p "$blobs" "$(dirname "$out")"

  # shellcheck disable=SC2046 # the top-level names, sorted, as separate arguments
  oci_reproducible_tar "$root" "$work/layer.tar" "$epoch" $(cd "$root" && LC_ALL=C ls -A)
  local diff_id layer layer_size config config_size manifest manifest_size
  diff_id=$(_oci_sha "$work/layer.tar")
  gzip -n -9 <"$work/layer.tar" >"$work/layer.tar.gz"
  layer_size=$(_oci_size "$work/layer.tar.gz")
  layer=$(_oci_sha "$work/layer.tar.gz")
  mv "$work/layer.tar.gz" "$blobs/$layer"

  jq -n -c -S --arg arch "$arch" --arg created "$created" --arg diff "sha256:$diff_id" \
    --argjson config "$config_json" '{
      architecture: $arch, os: "linux", created: $created, config: $config,
      rootfs: {type: "layers", diff_ids: [$diff]},
      history: [{created: $created, created_by: "weft scripts/lib/oci.sh"}]
    }' | tr -d '\n' >"$work/config.json"
  config_size=$(_oci_size "$work/config.json")
  config=$(_oci_sha "$work/config.json")
  mv "$work/config.json" "$blobs/$config"

  jq -n -c -S --arg config "sha256:$config" --argjson config_size "$config_size" \
    --arg layer "sha256:$layer" --argjson layer_size "$layer_size" '{
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json",
               digest: $config, size: $config_size},
      layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
                digest: $layer, size: $layer_size}]
    }' | tr -d '\n' >"$work/manifest.json"
  manifest_size=$(_oci_size "$work/manifest.json")
  manifest=$(_oci_sha "$work/manifest.json")
  mv "$work/manifest.json" "$blobs/$manifest"

  # A full reference as ref.name is what `ctr images import` keeps as the image's name (a
  # bare tag would get an "import-<date>" prefix); CRI then finds it by that name.
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

  oci_reproducible_tar "$work/layout" "$work/image.tar" "$epoch" blobs index.json oci-layout
  mv "$work/image.tar" "$out.tmp.$$"
  mv "$out.tmp.$$" "$out"
  rm -rf "$work"
  echo "== oci: $ref: manifest sha256:$manifest, $(_oci_size "$out") bytes" >&2
}
