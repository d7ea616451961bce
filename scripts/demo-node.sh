#!/usr/bin/env bash
# Weft single-node demo (the plugin alone, no agent): wire two pods with the real `weft` plugin exactly the way a container
# runtime does (CNI_* environment + config on stdin, run from the node's network namespace),
# check pod<->pod (IPv4 and IPv6) and pod->node connectivity, then tear everything down.
#
# Runs as root on Debian 12. Everything lives in network namespaces it creates
# (weftdemo-node, weftdemo-a, weftdemo-b) and a temp dir; nothing on the host network changes,
# and no traffic leaves those namespaces.
#
# Environment knobs (for development): SKIP_BUILD=1 uses the binaries already built;
# WEFT=/path/to/weft runs another plugin binary.
#
# Exit status: 0 when every check passed, 1 when a check failed, 2 on a setup error.

set -euo pipefail

NODE=weftdemo-node
PODS=(weftdemo-a weftdemo-b)
NETWORK=weftdemo
SUBNET4=10.244.0.0/24
SUBNET6=fd00:10:244::/64

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
REF_DIR=/usr/lib/cni

say() { printf '\n== %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 2; }

[[ $(id -u) -eq 0 ]] || die "run as root (it creates network namespaces)"

# --- leftovers of a previous (crashed) run -------------------------------------------------
remove_namespaces() {
    local ns
    for ns in "$NODE" "${PODS[@]}"; do
        if [[ -e /run/netns/$ns ]]; then ip netns del "$ns" 2>/dev/null || true; fi
    done
}
remove_namespaces
# Only our own prefix; the names of the namespaces above are fixed, so two demos can't run
# at once anyway.
rm -rf /tmp/weftdemo.* 2>/dev/null || true

# --- what the demo needs --------------------------------------------------------------------
missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v nft >/dev/null || missing+=(nftables)
command -v iptables >/dev/null || missing+=(iptables)
command -v ping >/dev/null || missing+=(iputils-ping)
[[ -x $REF_DIR/bridge ]] || missing+=(containernetworking-plugins)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    say "building release binaries (scripts/build.sh)"
    BIN_DIR=$("$ROOT/scripts/build.sh")
else
    BIN_DIR=$TARGET/$(rustc -vV | sed -n 's/^host: //p')/release
fi
WEFT=${WEFT:-$BIN_DIR/weft}
[[ -x $WEFT ]] || die "plugin binary $WEFT not found (build it, or set WEFT=)"
WEFT_DIR=$(cd "$(dirname "$WEFT")" && pwd)

# --- teardown, also on failure or Ctrl-C -----------------------------------------------------
TMP=$(mktemp -d /tmp/weftdemo.XXXXXX)
added=()
cleanup() {
    local status=$?
    set +e
    local pod
    for pod in "${added[@]}"; do cni DEL "$pod" >/dev/null 2>&1; done
    remove_namespaces
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$TMP/net.conf" <<EOF
{
  "cniVersion": "1.1.0",
  "name": "$NETWORK",
  "type": "weft",
  "mode": "bridge",
  "bridge": "weft0",
  "isGateway": true,
  "logFile": "$TMP/cni.log",
  "ipam": {
    "type": "weft-ipam",
    "ranges": [ [ { "subnet": "$SUBNET4" } ], [ { "subnet": "$SUBNET6" } ] ],
    "dataDir": "$TMP/ipam"
  }
}
EOF

# pretty FILE: the JSON indented when python3 is there (a fresh Debian may lack it).
pretty() {
    if command -v python3 >/dev/null; then python3 -m json.tool "$1"; else cat "$1"; echo; fi
}

# cni VERB POD: run the plugin as a runtime would, from the node namespace.
cni() {
    ip netns exec "$NODE" env -i \
        CNI_COMMAND="$1" CNI_CONTAINERID="$2" CNI_NETNS="/run/netns/$2" CNI_IFNAME=eth0 \
        CNI_PATH="$WEFT_DIR:$REF_DIR" PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        "$WEFT" <"$TMP/net.conf"
}

# --- namespaces and ADD ---------------------------------------------------------------------
say "namespaces: node $NODE, pods ${PODS[*]}"
for ns in "$NODE" "${PODS[@]}"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
done

for pod in "${PODS[@]}"; do
    say "ADD $pod"
    if ! cni ADD "$pod" >"$TMP/$pod.json" 2>"$TMP/$pod.err"; then
        cat "$TMP/$pod.json" "$TMP/$pod.err" >&2
        die "weft ADD $pod failed"
    fi
    added+=("$pod")
    pretty "$TMP/$pod.json"
done

# addr POD FAMILY: the pod's global address on eth0, as the kernel has it.
addr() {
    ip -n "$1" -o "-$2" addr show dev eth0 scope global | awk '{ split($4, a, "/"); print a[1]; exit }'
}
# gateway FAMILY: the gateway weft reported for that family in pod a's result.
gateway() {
    grep -oE '"gateway"[[:space:]]*:[[:space:]]*"[^"]*"' "$TMP/${PODS[0]}.json" |
        sed -E 's/.*"([^"]*)"$/\1/' |
        if [[ $1 == 6 ]]; then grep ':'; else grep -v ':'; fi | head -n1
}

A4=$(addr "${PODS[0]}" 4 || true); A6=$(addr "${PODS[0]}" 6 || true)
B4=$(addr "${PODS[1]}" 4 || true); B6=$(addr "${PODS[1]}" 6 || true)
GW4=$(gateway 4 || true); GW6=$(gateway 6 || true)
say "addresses: ${PODS[0]} $A4 $A6 | ${PODS[1]} $B4 $B6 | gateway $GW4 $GW6"

# IPv6 addresses are unusable while duplicate address detection runs (~1-2 s): wait for it
# to finish on both pods and on the node rather than fail the first ping.
for _ in $(seq 50); do
    tentative=0
    for ns in "$NODE" "${PODS[@]}"; do
        if ip -n "$ns" -6 addr show | grep -q tentative; then tentative=1; fi
    done
    ((tentative)) || break
    sleep 0.1
done

# --- connectivity ---------------------------------------------------------------------------
failures=0
check() { # check LABEL POD DEST
    local label=$1 pod=$2 dest=$3
    if [[ -z $dest ]]; then
        echo "FAIL  $label (no address to ping)"
        failures=$((failures + 1))
    elif ip netns exec "$pod" ping -c 2 -i 0.2 -W 2 "$dest" >"$TMP/ping.out" 2>&1; then
        echo "PASS  $label ($dest)"
    else
        echo "FAIL  $label ($dest)"
        sed 's/^/      /' "$TMP/ping.out"
        failures=$((failures + 1))
    fi
}

say "connectivity"
check "pod a -> pod b, IPv4" "${PODS[0]}" "$B4"
check "pod b -> pod a, IPv4" "${PODS[1]}" "$A4"
check "pod a -> pod b, IPv6" "${PODS[0]}" "$B6"
check "pod b -> pod a, IPv6" "${PODS[1]}" "$A6"
check "pod a -> node gateway, IPv4" "${PODS[0]}" "$GW4"
check "pod a -> node gateway, IPv6" "${PODS[0]}" "$GW6"

# --- DEL --------------------------------------------------------------------------------------
for pod in "${PODS[@]}"; do
    say "DEL $pod"
    if cni DEL "$pod" >"$TMP/$pod.del" 2>&1; then
        echo "ok"
    else
        cat "$TMP/$pod.del"
        echo "FAIL  DEL $pod"
        failures=$((failures + 1))
    fi
done
added=()

say "plugin log (one JSON line per ADD/DEL)"
cat "$TMP/cni.log" 2>/dev/null || echo "(no log written)"

if ((failures)); then
    say "$failures check(s) FAILED"
    exit 1
fi
say "all checks passed"
