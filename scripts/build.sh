#!/usr/bin/env bash
# Builds the release binaries and prints the directory that holds them: weft, weft-ipam,
# weftd, weftctl and weftctl-lab (which `weftctl lab` and `weftctl bench` run, found next to
# weftctl); with package names as arguments (weft-plugin, weft-agent, …), only those.
# The plugins are linked statically: the runtime executes them for every pod verb, and a
# static binary skips the dynamic loader (about 0.25 ms per exec on the 2-core test VM,
# a tenth of an ADD). Static glibc needs an explicit --target, hence the host triple.
# WEFT_BUILD_PROFILE picks another Cargo profile than `release` (the test suite's
# `image-test`, Cargo.toml); the directory printed is that profile's.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/deps.sh
. scripts/lib/deps.sh
ensure_cargo
host=$(rustc -vV | sed -n 's/^host: //p')
# Packages to build: the arguments, else all four (the image needs only the first three).
packages=("$@")
[ "${#packages[@]}" -gt 0 ] || packages=(weft-plugin weft-agent weft-ctl weft-lab)
profile=${WEFT_BUILD_PROFILE:-release}
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --profile "$profile" --locked --target "$host" "${packages[@]/#/-p}" >&2
echo "${CARGO_TARGET_DIR:-$PWD/target}/$host/$profile"
