#!/usr/bin/env bash
# The main job: a whole Weft cluster on this machine, then its connectivity check.
#
# Builds weft, weft-ipam, weftd, weftctl and weftctl-lab, then `weftctl lab up`: an underlay segment, a
# real etcd, three node namespaces each running a real weftd, and two pods per node wired by
# executing the real plugin as a container runtime does. `weftctl lab check` then sends real
# packets pod↔pod across nodes (IPv4 and IPv6), node→pod, and pod→"outside" through
# masquerade. Everything lives in network namespaces named `wldemo-*` and in
# /run/weft-lab/demo; no traffic leaves them. The lab stays up for you to explore; remove it
# with `weftctl lab down --name demo`.
#
# Knobs: BACKEND=vxlan|host-gw|auto (default vxlan), NODES (3), PODS (2 per node),
# SKIP_BUILD=1 to reuse the last release build.
#
# Exit status: 0 when every check passed, non-zero otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/demo.sh: run as root (the lab creates network namespaces)" >&2
  exit 2
fi
# shellcheck source=scripts/lib/deps.sh
. scripts/lib/deps.sh
ensure_packages
ensure_cargo

if [ "${SKIP_BUILD:-0}" = 1 ]; then
  host=$(rustc -vV | sed -n 's/^host: //p')
  BIN="${CARGO_TARGET_DIR:-$PWD/target}/$host/release"
else
  echo "== building (release)"
  BIN=$(./scripts/build.sh)
fi

echo "== weftctl lab up"
"$BIN/weftctl" lab up --name demo --nodes "${NODES:-3}" --pods-per-node "${PODS:-2}" \
  --backend "${BACKEND:-vxlan}"
echo "== weftctl lab check"
"$BIN/weftctl" lab check --name demo
cat <<MSG

The cluster is up. Try:
  $BIN/weftctl lab pods --name demo
  $BIN/weftctl lab exec --name demo n1-p1 -- ping -c1 <another pod's address>
  $BIN/weftctl lab down --name demo
MSG
