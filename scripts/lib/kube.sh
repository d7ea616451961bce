# shellcheck shell=bash
# Real Kubernetes 1.20 binaries for the tests that need an API server and nodes (issue 12):
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl.
# No registry reachable from the project's machines serves them, so they are built from
# Debian 12's `kubernetes` source package (vendor/ included) with Debian's Go, and cached
# outside the clone, one directory per Debian source version:
#   /var/cache/weft/kubernetes/<source version>/bin/
# The first call builds (10-20 minutes on 2 CPUs); later calls only look. See
# docs/kubernetes-build.md. Sourced, not executed.

WEFT_KUBE_CACHE=${WEFT_KUBE_CACHE:-/var/cache/weft/kubernetes}
WEFT_KUBE_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
# What the build runs: golang-go (Go 1.19, Debian's), make (the tree's Makefile), rsync (the
# build places the binaries with it), dpkg-dev (dpkg-source unpacks the source and applies
# Debian's patches), xz-utils (the debian.tar.xz). golang-github-modern-go-reflect2-dev:
# reflect2 1.0.2, which replaces the vendored 1.0.1 (see _kube_patch_reflect2).
WEFT_KUBE_BUILD_PACKAGES=(golang-go golang-github-modern-go-reflect2-dev make rsync dpkg-dev xz-utils)

# Only bookworm's source: a trixie deb-src entry would select 1.32, whose source has no
# vendor/ and builds kubectl only.
_KUBE_SUITE=bookworm
_KUBE_SOURCES=/etc/apt/sources.list.d/weft-deb-src.sources
_KUBE_REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2
_KUBE_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kube.sh
# shellcheck source=scripts/lib/deps.sh
. "$(dirname "$_KUBE_LIB")/deps.sh"

_kube_log() { echo "== kube: $*" >&2; }

_kube_complete() {
  local c
  for c in "${WEFT_KUBE_COMMANDS[@]}"; do
    [ -x "$1/bin/$c" ] || return 1
  done
}

# The Debian source version (without epoch, as in the file names) that `apt-get source`
# would fetch, from the local package lists: no network.
_kube_source_version() {
  apt-get source -qq --print-uris --download-only "kubernetes/$_KUBE_SUITE" 2>/dev/null |
    sed -n "s/^'[^']*' kubernetes_\(.*\)\.dsc .*/\1/p"
}

ensure_kube_binaries() {
  local version=""
  # Fast path: the lists name a version whose binaries are all cached. No apt-get update, no
  # download, no lock (a cache directory appears only complete, by a rename).
  if [ -f "$_KUBE_SOURCES" ]; then
    version=$(_kube_source_version || true)
  fi
  if [ -n "$version" ] && _kube_complete "$WEFT_KUBE_CACHE/$version"; then
    export WEFT_KUBE_BIN="$WEFT_KUBE_CACHE/$version/bin"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    _kube_log "the Kubernetes binaries are not cached in $WEFT_KUBE_CACHE; building them needs root (apt-get)"
    return 1
  fi
  # The work runs in a bash of its own with errexit, so that a failing step stops it (and its
  # EXIT trap names the step) even when the caller runs this in an `if` or before `||`, where
  # bash ignores errexit in every subshell too. It prints the version.
  if ! version=$(WEFT_KUBE_CACHE="$WEFT_KUBE_CACHE" WEFT_KUBE_KEEP_BUILD="${WEFT_KUBE_KEEP_BUILD:-0}" \
    bash -c 'set -euo pipefail; . "$1"; _kube_ensure_locked' kube.sh "$_KUBE_LIB") ||
    [ -z "$version" ] || ! _kube_complete "$WEFT_KUBE_CACHE/$version"; then
    _kube_log "no Kubernetes binaries (see the step named above)"
    return 1
  fi
  export WEFT_KUBE_BIN="$WEFT_KUBE_CACHE/$version/bin"
}

_kube_step=""
_kube_on_exit() {
  local rc=$1
  if [ "$rc" -ne 0 ]; then
    _kube_log "FAILED at step: $_kube_step (exit $rc)"
    if [ -n "${_kube_build_log:-}" ] && [ -f "$_kube_build_log" ]; then
      _kube_log "last lines of $_kube_build_log:"
      tail -n 25 "$_kube_build_log" >&2
    fi
  fi
}

# Runs in a bash of its own (see ensure_kube_binaries): prints the version on stdout, all
# else on stderr.
_kube_ensure_locked() {
  trap '_kube_on_exit $?' EXIT
  _kube_step="lock $WEFT_KUBE_CACHE/.lock"
  mkdir -p "$WEFT_KUBE_CACHE"
  exec 9>"$WEFT_KUBE_CACHE/.lock"
  if ! flock -n 9; then
    _kube_log "another caller holds $WEFT_KUBE_CACHE/.lock (building?): waiting"
    flock 9
  fi
  # Left by an install that was killed before its rename: never part of the cache.
  rm -rf "$WEFT_KUBE_CACHE"/.install-*

  _kube_step="install build packages"
  ensure_packages "${WEFT_KUBE_BUILD_PACKAGES[@]}"
  _kube_step="deb-src entry $_KUBE_SOURCES"
  _kube_write_sources
  # Building takes minutes: make the lists current first, so that the newest source version
  # of the suite is the one built.
  _kube_step="apt-get update"
  _kube_log "apt-get update"
  apt-get update -qq >&2
  _kube_step="resolve the source version"
  local version
  version=$(_kube_source_version)
  if [ -z "$version" ]; then
    _kube_log "apt-get source finds no kubernetes/$_KUBE_SUITE source package"
    return 1
  fi
  local dest="$WEFT_KUBE_CACHE/$version"
  if _kube_complete "$dest"; then
    # Built by the caller that held the lock before us.
    echo "$version"
    return 0
  fi
  local work="$WEFT_KUBE_CACHE/build-$version"
  # Measured: the build tree peaks at 2.6 GiB (Go's build cache in _output), then the binaries
  # take 0.4 GiB in the cache.
  _kube_check_space "$work" 3500 "the build"
  _kube_log "building Kubernetes from Debian source $version (10-20 min on 2 CPUs)"
  _kube_fetch_source "$version" "$work"
  _kube_unpack "$version" "$work"
  _kube_patch_reflect2 "$work"
  _kube_make "$work"
  _kube_install "$version" "$work"
  _kube_drop_build "$work"
  echo "$version"
}

# Fails (after saying so) when WEFT_KUBE_CACHE has less than $2 MiB free for $3, unless a
# build tree from an earlier attempt ($1/src/_output) already holds most of it.
_kube_check_space() {
  local work=$1 need_mib=$2 what=$3 avail_mib
  _kube_step="check the free space in $WEFT_KUBE_CACHE"
  avail_mib=$(df -Pm "$WEFT_KUBE_CACHE" | awk 'NR == 2 { print $4 }')
  if [ ! -d "$work/src/_output" ] && [ "$avail_mib" -lt "$need_mib" ]; then
    _kube_log "$what needs about $need_mib MiB free in $WEFT_KUBE_CACHE, there are $avail_mib MiB"
    return 1
  fi
}

# Removes the build tree $1 once its products are cached, unless WEFT_KUBE_KEEP_BUILD=1.
_kube_drop_build() {
  local work=$1
  if [ "${WEFT_KUBE_KEEP_BUILD:-0}" = 1 ]; then
    _kube_log "kept the build tree $work (WEFT_KUBE_KEEP_BUILD=1)"
  else
    _kube_step="remove the build tree $work"
    rm -rf "$work"
  fi
}

# The system's deb822 entries (debian.sources) as deb-src, bookworm suites only; the plain
# Debian mirror when the system has no such file.
_kube_sources_entries() {
  local system=/etc/apt/sources.list.d/debian.sources
  if [ -f "$system" ]; then
    awk -v suite="$_KUBE_SUITE" '
      function flush() { if (n && keep) { for (i = 1; i <= n; i++) print buf[i]; print "" } n = 0; keep = 0 }
      /^[[:space:]]*#/ { next }
      /^[[:space:]]*$/ { flush(); next }
      /^Types:/ { buf[++n] = "Types: deb-src"; next }
      /^Suites:/ {
        s = ""
        for (i = 2; i <= NF; i++) if ($i == suite || index($i, suite "-") == 1) s = s " " $i
        if (s != "") { keep = 1; buf[++n] = "Suites:" s }
        next
      }
      { buf[++n] = $0 }
      END { flush() }' "$system"
  else
    printf '%s\n' "Types: deb-src" "URIs: http://deb.debian.org/debian" \
      "Suites: $_KUBE_SUITE" "Components: main" \
      "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
  fi
}

_kube_write_sources() {
  local want
  want="# Written by weft's scripts/lib/kube.sh: Debian's kubernetes source, to build the test binaries.
$(_kube_sources_entries)"
  if ! grep -q '^Types: deb-src' <<<"$want"; then
    _kube_log "no $_KUBE_SUITE entry in /etc/apt/sources.list.d/debian.sources to derive deb-src from"
    return 1
  fi
  if [ ! -f "$_KUBE_SOURCES" ] || [ "$(cat "$_KUBE_SOURCES")" != "$want" ]; then
    _kube_log "writing $_KUBE_SOURCES"
    printf '%s\n' "$want" >"$_KUBE_SOURCES.tmp"
    mv "$_KUBE_SOURCES.tmp" "$_KUBE_SOURCES"
  fi
}

_kube_fetch_source() {
  local version=$1 work=$2
  _kube_step="download the source (apt-get source kubernetes/$_KUBE_SUITE)"
  mkdir -p "$work/dl"
  _kube_log "downloading the source into $work/dl"
  # Files already there with the right hashes are not fetched again. The sandbox user _apt
  # cannot write below /var/cache/weft: download as root.
  (cd "$work/dl" && apt-get source -qq --download-only -o APT::Sandbox::User=root \
    "kubernetes/$_KUBE_SUITE" >&2)
  local dsc="$work/dl/kubernetes_$version.dsc" got
  if [ ! -f "$dsc" ]; then
    _kube_log "apt-get source did not leave $dsc"
    return 1
  fi
  got=$(sed -n 's/^Version: \([0-9]*:\)\{0,1\}//p' "$dsc")
  if [ "$got" != "$version" ]; then
    _kube_log "$dsc says version $got, expected $version"
    return 1
  fi
}

_kube_unpack() {
  local version=$1 work=$2
  _kube_step="unpack the source (dpkg-source -x)"
  # The tree appears by a rename once unpacked and patched: a tree that is there is whole
  # (a killed build's tree is reused, and make picks up where it stopped).
  if [ -d "$work/src" ]; then
    _kube_log "reusing the unpacked tree $work/src"
    return 0
  fi
  _kube_log "unpacking with Debian's patches into $work/src"
  rm -rf "$work/src.tmp"
  # Checks the checksums; the signature cannot be (no Debian keyring), apt checked the files.
  dpkg-source --no-copy -x "$work/dl/kubernetes_$version.dsc" "$work/src.tmp" >"$work/unpack.log" 2>&1
  mv "$work/src.tmp" "$work/src"
}

# The vendored github.com/modern-go/reflect2 is 1.0.1, which can panic under Go 1.18+ when
# decoding map fields (json-iterator); Debian's 1.0.2 is API-compatible. The tree builds in
# GOPATH mode (GO111MODULE=off), so vendor/modules.txt is not checked against it.
_kube_patch_reflect2() {
  local work=$1 vendored="$1/src/vendor/github.com/modern-go/reflect2" v
  _kube_step="replace the vendored reflect2 with $_KUBE_REFLECT2"
  v=$(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)
  if [ ! -f "$_KUBE_REFLECT2/reflect2.go" ]; then
    _kube_log "$_KUBE_REFLECT2 has no reflect2.go"
    return 1
  fi
  _kube_log "vendor/github.com/modern-go/reflect2 <- golang-github-modern-go-reflect2-dev $v"
  rm -rf "$vendored"
  mkdir -p "$vendored"
  find "$_KUBE_REFLECT2" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' -o -name LICENSE \) \
    ! -name '*_test.go' -exec cp -t "$vendored" {} +
}

# The build's own status lines ("+++ [time] Building go targets for linux/amd64:" and the
# targets under them), as progress lines.
_kube_make_progress() {
  awk '/^\+\+\+ / { sub(/^\+\+\+ \[[^]]*\] /, ""); print "== kube: make: " $0; fflush(); f = 1; next }
    f && /^    [^ ]/ { sub(/^ +/, ""); print "== kube: make:   " $0; fflush(); next }
    { f = 0 }'
}

# make WHAT=TARGETS (the main binaries when none are given).
_kube_make() {
  local work=$1 what=${2:-} c
  if [ -z "$what" ]; then
    for c in "${WEFT_KUBE_COMMANDS[@]}"; do what+="${what:+ }cmd/$c"; done
  fi
  _kube_step="make WHAT=\"$what\" in $work/src"
  # Like Debian's rules: a GOPATH whose k8s.io/kubernetes is the tree, static binaries.
  mkdir -p "$work/gopath/src/k8s.io" "$work/home"
  ln -sfn "$work/src" "$work/gopath/src/k8s.io/kubernetes"
  _kube_build_log="$work/build.log"
  _kube_log "make WHAT=\"$what\" (log: $_kube_build_log)"
  local start=$SECONDS
  # Debian's go first; no module proxy (the tree builds from vendor/ in GOPATH mode), no
  # GOFLAGS of the caller's, HOME inside the work dir.
  (cd "$work/gopath/src/k8s.io/kubernetes" &&
    env -u GOFLAGS PATH="/usr/lib/go/bin:$PATH" GOPATH="$work/gopath" GOPROXY=off \
      CGO_ENABLED=0 HOME="$work/home" make WHAT="$what") 2>&1 |
    tee -a "$_kube_build_log" | _kube_make_progress >&2
  local took=$((SECONDS - start))
  _kube_log "make took $((took / 60))m$((took % 60))s"
  echo "$took" >"$work/make-seconds"
}

_kube_install() {
  local version=$1 work=$2 tmp c
  _kube_step="install into $WEFT_KUBE_CACHE/$version"
  tmp=$(mktemp -d "$WEFT_KUBE_CACHE/.install-$version.XXXXXX")
  chmod 755 "$tmp"
  mkdir "$tmp/bin"
  for c in "${WEFT_KUBE_COMMANDS[@]}"; do
    cp "$work/src/_output/bin/$c" "$tmp/bin/$c"
  done
  "$tmp/bin/kubectl" version --client --short >&2
  {
    echo "debian-source: kubernetes $version ($_KUBE_SUITE)"
    echo "go: $(/usr/lib/go/bin/go version)"
    echo "reflect2: golang-github-modern-go-reflect2-dev $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)"
    echo "make-seconds: $(cat "$work/make-seconds" 2>/dev/null || echo unknown)"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  } >"$tmp/BUILD-INFO"
  sync "$tmp"/bin/* "$tmp/BUILD-INFO"
  # Incomplete (a binary removed by hand): replaced whole, under the lock, but the e2e
  # files (ensure_kube_e2e) are built from the same source and stay valid.
  if [ -d "$WEFT_KUBE_CACHE/$version/e2e" ]; then
    mv "$WEFT_KUBE_CACHE/$version/e2e" "$tmp/e2e"
  fi
  rm -rf "${WEFT_KUBE_CACHE:?}/$version"
  mv -T "$tmp" "$WEFT_KUBE_CACHE/$version"
  _kube_log "installed $WEFT_KUBE_CACHE/$version/bin"
}

# shellcheck source=scripts/lib/kube-e2e.sh
. "$(dirname "$_KUBE_LIB")/kube-e2e.sh"
