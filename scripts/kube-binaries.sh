#!/usr/bin/env bash
# Makes sure the Kubernetes 1.20 binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy, kubectl) are in the cache, building them from Debian's
# source the first time (10-20 minutes, as root), and prints the directory that holds them.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/kube.sh
. scripts/lib/kube.sh
ensure_kube_binaries
echo "$WEFT_KUBE_BIN"
