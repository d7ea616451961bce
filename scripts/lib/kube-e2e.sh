# shellcheck shell=bash
# Kubernetes' own end-to-end tests for the kubelet lab (issue 13): `e2e.test` and agnhost,
# the program of the image its networking tests run, built from the same Debian source as
# the binaries of kube.sh (which sources this file), and cached next to them:
#   /var/cache/weft/kubernetes/<source version>/e2e/
#       e2e.test           make WHAT=test/e2e/e2e.test, static
#       agnhost            go build ./test/images/agnhost, static
#       agnhost.oci.tar    agnhost as the image e2e.test asks for (agnhost.ref), to import
#       agnhost.ref        that image's name, from test/utils/image/manifest.go
#       BUILD-INFO
# Built only when missing (about 15 minutes on 2 CPUs, the source tree fetched again unless
# WEFT_KUBE_KEEP_BUILD=1 kept it); the main binaries' cache does not depend on these files.
# Sourced, not executed.

# netcat-openbsd and curl: the tests' node-to-pod checks exec `nc -u` and `curl` in an
# agnhost pod (upstream's image is Alpine with them); busybox's nc has no -u. jq: oci.sh.
WEFT_KUBE_E2E_PACKAGES=(curl netcat-openbsd busybox-static jq)

_kube_e2e_complete() {
  local f
  for f in e2e.test agnhost agnhost.oci.tar agnhost.ref; do
    [ -s "$1/e2e/$f" ] || return 1
  done
}

# Sets WEFT_KUBE_E2E to the directory of the files above; builds them (as root) when
# missing. Needs the main binaries: the two caches share the version directory.
ensure_kube_e2e() {
  ensure_kube_binaries || return 1
  local dir version
  dir=$(dirname "$WEFT_KUBE_BIN")
  version=$(basename "$dir")
  if _kube_e2e_complete "$dir"; then
    export WEFT_KUBE_E2E="$dir/e2e"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    _kube_log "the Kubernetes e2e binaries are not cached in $dir/e2e; building them needs root (apt-get)"
    return 1
  fi
  # In a bash of its own with errexit, for the reasons of ensure_kube_binaries.
  if ! WEFT_KUBE_CACHE="$WEFT_KUBE_CACHE" WEFT_KUBE_KEEP_BUILD="${WEFT_KUBE_KEEP_BUILD:-0}" \
    bash -c 'set -euo pipefail; . "$1"; _kube_e2e_locked "$2"' kube.sh "$_KUBE_LIB" "$version" ||
    ! _kube_e2e_complete "$dir"; then
    _kube_log "no Kubernetes e2e binaries (see the step named above)"
    return 1
  fi
  export WEFT_KUBE_E2E="$dir/e2e"
}

# Builds the e2e files of the source version $1 (the cached binaries' version, not the
# lists' newest: both must come from one source). Runs in a bash of its own.
_kube_e2e_locked() {
  local version=$1
  trap '_kube_on_exit $?' EXIT
  _kube_step="lock $WEFT_KUBE_CACHE/.lock"
  exec 9>"$WEFT_KUBE_CACHE/.lock"
  if ! flock -n 9; then
    _kube_log "another caller holds $WEFT_KUBE_CACHE/.lock (building?): waiting"
    flock 9
  fi
  rm -rf "$WEFT_KUBE_CACHE"/.install-*
  if _kube_e2e_complete "$WEFT_KUBE_CACHE/$version"; then
    return 0
  fi
  _kube_step="install build packages"
  ensure_packages "${WEFT_KUBE_BUILD_PACKAGES[@]}" "${WEFT_KUBE_E2E_PACKAGES[@]}"
  _kube_step="deb-src entry $_KUBE_SOURCES"
  _kube_write_sources
  _kube_step="check that apt-get source gives $version"
  local listed
  listed=$(_kube_source_version || true)
  if [ "$listed" != "$version" ]; then
    _kube_log "apt-get update"
    apt-get update -qq >&2
    listed=$(_kube_source_version || true)
  fi
  if [ "$listed" != "$version" ]; then
    # The binaries were built from a source the lists no longer offer: rebuilding them
    # (ensure_kube_binaries after removing $WEFT_KUBE_CACHE/$version) gives one source again.
    _kube_log "the cached binaries are of source $version, apt-get source now gives ${listed:-nothing}"
    return 1
  fi
  local work="$WEFT_KUBE_CACHE/build-$version"
  _kube_check_space "$work" 4000 "the e2e build"
  _kube_log "building e2e.test and agnhost from Debian source $version (about 15 min on 2 CPUs)"
  _kube_fetch_source "$version" "$work"
  _kube_unpack "$version" "$work"
  _kube_patch_reflect2 "$work"
  _kube_make "$work" test/e2e/e2e.test
  _kube_build_agnhost "$work"
  _kube_e2e_install "$version" "$work"
  _kube_drop_build "$work"
}

_kube_build_agnhost() {
  local work=$1 start=$SECONDS
  _kube_build_log="$work/build.log"
  _kube_step="go build ./test/images/agnhost in $work/src"
  _kube_log "go build ./test/images/agnhost (log: $_kube_build_log)"
  # As _kube_make builds: GOPATH mode from vendor/, static.
  (cd "$work/gopath/src/k8s.io/kubernetes" &&
    env -u GOFLAGS PATH="/usr/lib/go/bin:$PATH" GOPATH="$work/gopath" GOPROXY=off \
      GO111MODULE=off CGO_ENABLED=0 HOME="$work/home" \
      go build -ldflags='-s -w' -o "$work/agnhost" ./test/images/agnhost) >>"$_kube_build_log" 2>&1
  local took=$((SECONDS - start))
  _kube_log "agnhost took $((took / 60))m$((took % 60))s"
  echo "$took" >"$work/agnhost-seconds"
}

# The agnhost image e2e.test runs: its registry, name and version as manifest.go sets them
# (`configs[Agnhost] = Config{promoterE2eRegistry, "agnhost", "2.21"}`), the registry's
# default from the same file. e2e.test would rewrite it only with KUBE_TEST_REPO_LIST.
_kube_agnhost_ref() {
  local manifest=$1/src/test/utils/image/manifest.go registry name tag
  read -r registry name tag < <(sed -n \
    's/^[[:space:]]*configs\[Agnhost\] = Config{\([A-Za-z0-9]*\), "\([^"]*\)", "\([^"]*\)"}.*/\1 \2 \3/p' \
    "$manifest")
  [ -n "$tag" ] || return 1
  registry=$(sed -n "s/^[[:space:]]*${registry^}:[[:space:]]*\"\([^\"]*\)\",.*/\1/p" "$manifest" | head -n 1)
  [ -n "$registry" ] || return 1
  echo "$registry/$name:$tag"
}

# Copies PROGRAM and the shared libraries it loads (ldd's list) into ROOT, at their paths.
_kube_copy_program() {
  local root=$1 program=$2 lib
  mkdir -p "$root$(dirname "$program")"
  cp -L "$program" "$root$program"
  for lib in $(ldd "$program" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}

# agnhost's image: /agnhost as the entrypoint (as upstream's), and what the tests exec in
# its pods besides (`sh -c` of curl, `nc -u`, grep…): busybox's tools in /bin, and before
# them on PATH, in /usr/bin, curl and an nc that speaks UDP (netcat-openbsd), with their
# libraries. The shell is dash: Debian's busybox sh runs its own applets before PATH, and
# its nc has no -u.
_kube_agnhost_image() {
  local work=$1 out=$2 ref=$3 root="$1/agnhost-root" applet nc
  rm -rf "$root"
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/usr/bin"
  cp "$work/agnhost" "$root/agnhost"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    case "$applet" in busybox | sh | nc) continue ;; esac
    ln -s busybox "$root/bin/$applet"
  done
  _kube_copy_program "$root" "$(readlink -f /bin/dash)"
  ln -s "$(readlink -f /bin/dash)" "$root/bin/sh"
  _kube_copy_program "$root" "$(readlink -f /usr/bin/curl)"
  nc=$(readlink -f /bin/nc.openbsd)
  _kube_copy_program "$root" "$nc"
  [ -e "$root/usr/bin/nc" ] || ln -s "$nc" "$root/usr/bin/nc"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
  find "$root" -type d -exec chmod 0755 {} +
  chmod 1777 "$root/tmp"
  # shellcheck source=scripts/lib/oci.sh
  . "$(dirname "$_KUBE_LIB")/oci.sh"
  oci_archive "$root" "$ref" "$out" \
    '{"Entrypoint":["/agnhost"],"Env":["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"]}'
}

_kube_e2e_install() {
  local version=$1 work=$2 tmp ref
  _kube_step="read agnhost's image name from test/utils/image/manifest.go"
  ref=$(_kube_agnhost_ref "$work")
  _kube_log "agnhost image: $ref"
  _kube_step="install into $WEFT_KUBE_CACHE/$version/e2e"
  tmp=$(mktemp -d "$WEFT_KUBE_CACHE/.install-e2e-$version.XXXXXX")
  chmod 755 "$tmp"
  cp "$work/src/_output/bin/e2e.test" "$tmp/e2e.test"
  cp "$work/agnhost" "$tmp/agnhost"
  "$tmp/agnhost" --help >/dev/null
  _kube_step="agnhost image $ref"
  _kube_agnhost_image "$work" "$tmp/agnhost.oci.tar" "$ref"
  echo "$ref" >"$tmp/agnhost.ref"
  {
    echo "debian-source: kubernetes $version ($_KUBE_SUITE)"
    echo "go: $(/usr/lib/go/bin/go version)"
    echo "make-seconds (e2e.test): $(cat "$work/make-seconds" 2>/dev/null || echo unknown)"
    echo "agnhost-seconds: $(cat "$work/agnhost-seconds" 2>/dev/null || echo unknown)"
    echo "agnhost-image: $ref"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  } >"$tmp/BUILD-INFO"
  sync "$tmp"/*
  rm -rf "${WEFT_KUBE_CACHE:?}/$version/e2e"
  mv -T "$tmp" "$WEFT_KUBE_CACHE/$version/e2e"
  _kube_log "installed $WEFT_KUBE_CACHE/$version/e2e"
}
