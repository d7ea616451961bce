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
# With --kubelet: a real Kubernetes 1.20 cluster instead (`weftctl lab up --kubelet`): the
# control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) and NODES
# (default 2) nodes each running containerd, kubelet and kube-proxy; weft installed with
# `kubectl apply -f deploy/weft.yaml`; a 4-replica Deployment and its Service; then every
# pod asks every other pod, the Service and the outside over HTTP, and prints what answered.
# The first run builds Kubernetes from Debian's source (10-20 minutes on 2 CPUs, cached in
# /var/cache/weft/kubernetes/) and the image archives (scripts/lab-images.sh: the static
# release build, a few minutes, cached in target/); later runs take about a minute.
#
# Knobs: BACKEND=vxlan|host-gw|auto (default vxlan), NODES (3; 2 with --kubelet), PODS (2 per
# node), SKIP_BUILD=1 to reuse the last release build.
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
kubelet=0
case "${1:-}" in
  --kubelet) kubelet=1 ;;
  "") ;;
  *)
    echo "usage: scripts/demo.sh [--kubelet]" >&2
    exit 2
    ;;
esac

if [ "${SKIP_BUILD:-0}" = 1 ]; then
  host=$(rustc -vV | sed -n 's/^host: //p')
  BIN="${CARGO_TARGET_DIR:-$PWD/target}/$host/release"
else
  echo "== building (release)"
  BIN=$(./scripts/build.sh)
fi

if [ "$kubelet" = 1 ]; then
  # shellcheck source=scripts/lib/kube.sh
  . scripts/lib/kube.sh
  echo "== Kubernetes 1.20 binaries (built once, then cached)"
  ensure_kube_binaries
  echo "== image archives (weft, pause, probe)"
  images=$(WEFT_RELEASE_DIR="$BIN" scripts/lab-images.sh)
  echo "== weftctl lab up --kubelet"
  "$BIN/weftctl" lab up --name demo --datastore kubernetes --kubelet --nodes "${NODES:-2}" \
    --backend "${BACKEND:-vxlan}" --images "$images"
  k() { "$BIN/weftctl" lab kubectl --name demo -- "$@"; }
  echo "== a Deployment of 4 probe pods and its Service"
  k create deployment probe --image=localhost/weft-probe:lab --replicas=4 \
    -- httpd -f -p 8080 -h /var/www >/dev/null 2>&1 || true
  k expose deployment probe --port 80 --target-port 8080 >/dev/null 2>&1 || true
  k rollout status deployment/probe --timeout=180s
  k get pods -o wide
  echo "== connectivity: each pod asks every pod, the Service and the outside (203.0.113.1)"
  svc=$(k get service probe -o 'jsonpath={.spec.clusterIP}')
  mapfile -t pods < <(k get pods -l app=probe -o 'jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{"\n"}{end}')
  failed=0
  for from in "${pods[@]}"; do
    name=${from%% *}
    for to in "${pods[@]}"; do
      ip=${to##* }
      [ "$to" = "$from" ] && continue
      if k exec "$name" -- timeout 2 wget -q -O /dev/null "http://$ip:8080/" 2>/dev/null; then
        echo "  ok    $name -> pod $ip"
      else
        echo "  FAIL  $name -> pod $ip"
        failed=1
      fi
    done
    if k exec "$name" -- timeout 2 wget -q -O /dev/null "http://$svc/" 2>/dev/null; then
      echo "  ok    $name -> service $svc"
    else
      echo "  FAIL  $name -> service $svc"
      failed=1
    fi
    # The outside answers nothing on HTTP: a ping shows the masqueraded way out.
    if k exec "$name" -- ping -c1 -W2 203.0.113.1 >/dev/null 2>&1; then
      echo "  ok    $name -> outside 203.0.113.1 (ping, masqueraded)"
    else
      echo "  FAIL  $name -> outside 203.0.113.1"
      failed=1
    fi
  done
  cat <<MSG

The cluster is up (its kubectl runs inside the lab's router namespace). Try:
  $BIN/weftctl lab kubectl --name demo -- get nodes,pods -A -o wide
  $BIN/weftctl lab kubectl --name demo -- exec deploy/probe -- wget -q -O - http://$svc/
Remove it with: $BIN/weftctl lab down --name demo
MSG
  exit "$failed"
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
