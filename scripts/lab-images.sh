#!/usr/bin/env bash
# Builds the images a kubelet lab (`weftctl lab up --kubelet`) imports on every node, as OCI
# archives in DIR (default: <target dir>/lab-images, where the lab looks), and prints DIR:
#
#   DIR/weft.oci.tar    localhost/weft:<version>   weft's own, by scripts/image.sh (the
#                                                  static release build: minutes the first
#                                                  time; WEFT_RELEASE_DIR skips it)
#   DIR/pause.oci.tar   localhost/weft-pause:lab   every pod's sandbox (deploy/lab/pause.c,
#                                                  static)
#   DIR/probe.oci.tar   localhost/weft-probe:lab   busybox (static): sh, ping, nc, wget,
#                                                  httpd… for the tests' pods
#
# No registry: every lab node imports the files (`ctr -n k8s.io images import`), and pods
# use them with imagePullPolicy Never or IfNotPresent. Reproducible, like weft's image.
set -euo pipefail

out=${1:-}
if [ -n "$out" ]; then
  case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
fi
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/deps.sh
. scripts/lib/deps.sh
# shellcheck source=scripts/lib/oci.sh
. scripts/lib/oci.sh
ensure_packages jq gcc libc6-dev busybox-static
[ -n "$out" ] || out="${CARGO_TARGET_DIR:-$PWD/target}/lab-images"
mkdir -p "$out"

work=$(mktemp -d "${TMPDIR:-/tmp}/weft-lab-images.XXXXXX")
trap 'rm -rf "$work"' EXIT

scripts/image.sh "$out/weft.oci.tar" >/dev/null

# pause: one static program, nothing else in the image.
mkdir -p "$work/pause"
gcc -static -O2 -Wall -Werror -o "$work/pause/pause" deploy/lab/pause.c
strip "$work/pause/pause"
chmod 0755 "$work/pause" "$work/pause/pause"
oci_archive "$work/pause" localhost/weft-pause:lab "$out/pause.oci.tar" \
  '{"Entrypoint":["/pause"]}'

# probe: busybox and a link for each of its applets in /bin, /etc with the files name
# lookups read (root only; localhost).
probe="$work/probe"
mkdir -p "$probe/bin" "$probe/etc" "$probe/tmp" "$probe/var/www"
cp /bin/busybox "$probe/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$probe/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$probe/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$probe/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$probe/etc/hosts"
echo weft-probe >"$probe/var/www/index.html"
find "$probe" -type d -exec chmod 0755 {} +
chmod 1777 "$probe/tmp"
chmod 0755 "$probe/bin/busybox"
chmod 0644 "$probe/etc/passwd" "$probe/etc/group" "$probe/etc/hosts" "$probe/var/www/index.html"
oci_archive "$probe" localhost/weft-probe:lab "$out/probe.oci.tar" \
  '{"Cmd":["/bin/sh"],"Env":["PATH=/bin"]}'
echo "$out"
