# shellcheck shell=bash
# Shared by the set-up scripts: install what weft needs on a fresh Debian 12 machine.
# Sourced, not executed.

# Every program the scripts, the binaries or the tests run comes from one of these (or from a
# package they pull in, or one every Debian system has): the test script runs the suite under
# `exec-guard`, which fails when a program comes from anywhere else.
# protobuf-compiler: etcd-client's build script runs protoc. etcd-server: the datastore of the lab
# and of the agent tests; etcd-client: `etcdctl`, which tests read the datastore with. iperf3,
# sockperf: the dataplane benchmark. gcc: the linker rustc calls (and doc tests). python3: the
# policy kernel tests' socket probes. containerd: its `ctr` imports the image of
# scripts/image.sh in the image test, as a node would, and runs the kubelet lab's nodes (with
# runc); conntrack: kube-proxy runs it there; gcc with libc6-dev builds the lab's static pause
# program and busybox-static is its probe image (scripts/lab-images.sh); curl and
# netcat-openbsd go into the agnhost image of Kubernetes' e2e tests, whose pods run them
# (scripts/lib/kube-e2e.sh). clang, libbpf-dev and linux-libc-dev: weft-ebpf's build script
# compiles its BPF programs (C, `clang -target bpf`, libbpf's and the kernel's headers).
WEFT_APT_PACKAGES=(iproute2 iputils-ping nftables iptables containernetworking-plugins jq procps
  protobuf-compiler etcd-server etcd-client iperf3 sockperf openssl gcc libc6-dev python3 containerd
  runc conntrack busybox-static curl netcat-openbsd clang libbpf-dev linux-libc-dev)

# Installs the packages named (WEFT_APT_PACKAGES when none are) that are missing. Says what
# it does on stderr only: callers may be printing a result on stdout.
ensure_packages() {
  local missing=() p
  [ "$#" -gt 0 ] || set -- "${WEFT_APT_PACKAGES[@]}"
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
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
