# Shared by the set-up scripts: install what weft needs on a fresh Debian 12 machine.
# Sourced, not executed.

# protobuf-compiler: etcd-client's build script runs protoc. etcd-server: the datastore of the lab
# and of the agent tests; etcd-client (the package): etcdctl, with which tests read it directly.
# iperf3: the throughput benchmark.
WEFT_APT_PACKAGES=(iproute2 iputils-ping nftables iptables containernetworking-plugins jq procps
  protobuf-compiler etcd-server etcd-client iperf3 sockperf openssl)

ensure_packages() {
  local missing=()
  for p in "${WEFT_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install a Rust toolchain (rustup, 1.95 or newer) first" >&2
    exit 1
  fi
}
