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

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== the plugin binaries link no async runtime"
if cargo tree -p weft-plugin -e normal --locked | grep -Eq '\b(tokio|async-std|smol)\b'; then
  echo "weft-plugin depends on an async runtime; it must stay synchronous" >&2
  exit 1
fi
echo "== cargo test"
cargo test --workspace --locked -- --test-threads="${WEFT_TEST_THREADS:-4}"
