#!/usr/bin/env bash
# Makes sure Kubernetes' e2e.test and agnhost (with its image archive) are in the cache,
# building them from the same Debian source as the binaries of scripts/kube-binaries.sh the
# first time (about 15 minutes, as root, plus the binaries' build if they are missing too),
# and prints the directory that holds them.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/kube.sh
. scripts/lib/kube.sh
ensure_kube_e2e
echo "$WEFT_KUBE_E2E"
