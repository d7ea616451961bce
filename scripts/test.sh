#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing (Debian packages), checks
# formatting and lints, builds, and runs every test against the real kernel. Run as root on
# a Debian 12 machine with a Rust toolchain (rustup). Tests only create network namespaces,
# links and nftables tables with a `wt` prefix and remove them when they end.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: run as root (tests create network namespaces)" >&2
  exit 1
fi
# shellcheck source=scripts/lib/deps.sh
. scripts/lib/deps.sh
ensure_packages
ensure_cargo
# The Kubernetes datastore's tests run a real kube-apiserver (and controller manager): the
# project's own 1.20 build, cached outside the clone (the first build takes ~10 minutes).
# shellcheck source=scripts/lib/kube.sh
. scripts/lib/kube.sh
ensure_kube_binaries
echo "== Kubernetes binaries: $WEFT_KUBE_BIN"
# Kubernetes' own e2e tests of pod networking run against a kubelet lab: e2e.test and the
# agnhost image of the same source (the first build takes ~15 minutes more).
ensure_kube_e2e
export WEFT_KUBE_E2E
echo "== Kubernetes e2e files: $WEFT_KUBE_E2E"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== the plugin binaries link no async runtime and no BPF loader"
if cargo tree -p weft-plugin -e normal --locked | grep -Eq '\b(tokio|async-std|smol)\b'; then
  echo "weft-plugin depends on an async runtime; it must stay synchronous" >&2
  exit 1
fi
# weftd does the BPF work (crates/ebpf) when the plugin's ADD asks it to attach a pod.
if cargo tree -p weft-plugin -e normal --locked --prefix none | grep -Eq '^(aya|aya-obj|weft-ebpf) '; then
  echo "weft-plugin depends on aya or weft-ebpf; the BPF work is weftd's" >&2
  exit 1
fi
echo "== weftctl links neither weftd's code, the backend nor nf_tables"
# The operator's CLI stays small: the lab and the benchmarks need those, and they are
# weftctl-lab (weft-lab), which `weftctl lab|bench` execs.
tree=$(cargo tree -p weft-ctl -e normal --locked --prefix none)
linked=$(grep -Eo '^weft-(agent|backend|nft|lab) ' <<<"$tree" | sort -u | tr -d ' ' | paste -sd, - || true)
if [ -n "$linked" ]; then
  echo "weft-ctl depends on $linked; lab and benchmark code belongs in weft-lab (crates/lab)" >&2
  exit 1
fi
echo "== cargo build"
# The lab tests (weft-lab) run weftctl, weftd, weft and weft-ipam from next to weftctl-lab:
# build every binary first (cargo test alone builds only each package's own test harnesses
# and the binaries its integration tests name), and the test harnesses too, so that what
# runs under the exec guard below is the tests, not the compiler.
cargo build --workspace --all-targets --locked
target=$(cargo metadata --format-version 1 --no-deps --locked | jq -r .target_directory)
echo "== image archives for the kubelet lab (scripts/lab-images.sh: a static build)"
# Once, before the tests: the kubelet lab test imports them on its nodes, and the image test
# finds the build done. The suite's images are built without cross-crate LTO (profile
# image-test): the same code as a release, without its slowest step.
# They go to a directory of their own, so that a benchmark never takes them for a release's.
export WEFT_BUILD_PROFILE=${WEFT_BUILD_PROFILE:-image-test}
WEFT_LAB_IMAGES=$(scripts/lab-images.sh "$target/lab-images-$WEFT_BUILD_PROFILE")
export WEFT_LAB_IMAGES
echo "== cargo test (under exec-guard: every program run must come from an installed package)"
log=$(mktemp /tmp/weft-test.XXXXXX)
trap 'rm -f "$log"' EXIT
status=0
# exec-guard (crates/testkit) records every program the tests execute and fails the run when
# one comes from a Debian package that WEFT_APT_PACKAGES does not install (with what those
# pull in and what every Debian system has), or from no package: a program installed by
# hand here is caught here, not on a fresh machine. The checkout, the build and the
# Kubernetes builds are ours.
"$target/debug/exec-guard" run --packages "${WEFT_APT_PACKAGES[*]}" --ours "$PWD" --ours "$target" --ours "$WEFT_KUBE_BIN" --ours "$WEFT_KUBE_E2E" -- \
  cargo test --workspace --locked --no-fail-fast -- --test-threads="${WEFT_TEST_THREADS:-4}" 2>&1 | tee "$log" || status=$?
# One closing line for the whole suite (the last binary cargo runs is often an empty doc-test
# binary, whose "0 passed" says nothing about the run).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "weft: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
