#!/usr/bin/env bash
# Builds the CPU image (Dockerfile) with nothing but Debian's archive and Debian's tools, then
# runs it and checks it: health SERVING, one generated image through it, the runtime user.
#
#   deploy/build-image-offline.sh            (as root; docs/deploy.md, "Building without a registry")
#
# No registry is needed: debootstrap makes a minimal Debian 12 root file system from the Debian
# mirror, `podman import` turns it into the base image the Dockerfile starts FROM (tagged with that
# name, and the build runs with --pull=never so nothing else is looked up), and podman builds and
# runs the Dockerfile. The base image is made once and reused; DARTSERVE_REBUILD_BASE=1 makes it
# again. Environment:
#   DEBIAN_MIRROR  the archive debootstrap reads (default: the first URI in apt's sources)
#   IMAGE          the tag to build (default dartserve:latest)
#   PODMAN_FLAGS   podman's global options (default: runc, which Debian's podman can use on hybrid
#                  cgroups where its default crun cannot, and cgroupfs without systemd)
#   PORT           the host port the check publishes gRPC on (default 50599)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-dartserve:latest}
PORT=${PORT:-50599}
read -r -a podman_flags <<< "${PODMAN_FLAGS:---runtime runc --cgroup-manager cgroupfs}"
podman() { command podman "${podman_flags[@]}" "$@"; }
# A container's limits: podman's defaults derive them from this host's, which a nested or
# hybrid-cgroup host may not grant.
ulimits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

for tool in podman debootstrap runc; do
  command -v "$tool" >/dev/null || { echo "$0: needs $tool (apt-get install podman debootstrap runc)" >&2; exit 1; }
done

# The base image: the Dockerfile's DEBIAN_IMAGE, from Debian's archive.
base=$(sed -n 's/^ARG DEBIAN_IMAGE=//p' Dockerfile)
if [ -n "${DARTSERVE_REBUILD_BASE:-}" ] || ! podman image exists "$base"; then
  mirror=${DEBIAN_MIRROR:-}
  if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
      sed -n 's/^URIs: *\([^ ]*debian\)$/\1/p;s/^deb \(http[^ ]*debian\) .*/\1/p' | head -n 1 || true)
  fi
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs=$(mktemp -d /tmp/dartserve-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "build-image-offline: debootstrap bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
  # As the slim image: no apt lists or caches, documentation left out of later installs.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  tar -C "$rootfs" -c . | podman import --change 'CMD ["bash"]' - "$base" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
fi
echo "build-image-offline: base $base, $(podman image inspect --format '{{.Size}}' "$base") bytes"

start=$(date +%s)
podman build --pull=never "${ulimits[@]}" -t "$IMAGE" -f Dockerfile .
echo "build-image-offline: built $IMAGE in $(( $(date +%s) - start )) s," \
  "$(podman image inspect --format '{{.Size}}' "$IMAGE") bytes"

# Run it as an operator would and check what the image promises.
name=dartserve-offline-check
podman rm -f "$name" >/dev/null 2>&1 || true
trap 'podman rm -f "$name" >/dev/null 2>&1 || true' EXIT
podman run -d --name "$name" "${ulimits[@]}" -p "127.0.0.1:$PORT:50051" "$IMAGE" >/dev/null
started=$(date +%s)
client=(podman exec "$name" dartserve-client --server=127.0.0.1:50051 --timeout=4)
deadline=$(( $(date +%s) + 300 ))
until "${client[@]}" health >/dev/null 2>&1; do
  if [ "$(podman inspect --format '{{.State.Running}}' "$name")" != true ] ||
     [ "$(date +%s)" -gt "$deadline" ]; then
    echo "build-image-offline: the server did not become SERVING; its log:" >&2
    podman logs "$name" >&2
    exit 1
  fi
  sleep 2  # polling a process in another container: there is nothing to wait on
done
echo "build-image-offline: health SERVING $(( $(date +%s) - started )) s after the container started"
# The server process's own user (PID 1 of the container, seen from the host).
pid=$(podman inspect --format '{{.State.Pid}}' "$name")
user=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
[ "$user" = 10001 ] || { echo "build-image-offline: the server runs as uid $user, not 10001" >&2; exit 1; }
out=$(mktemp -d /tmp/dartserve-image-check.XXXXXX)
podman exec "$name" dartserve-client --server=127.0.0.1:50051 --timeout=60 generate \
  --model fmnist-dart --class 3 --seed 1 --out /tmp/check >/dev/null
podman cp "$name:/tmp/check" "$out/" >/dev/null
png=$(find "$out" -name '*.png' ! -name '*_step*' | head -n 1)  # the result, not a preview
[ -n "$png" ] || { echo "build-image-offline: no image came back" >&2; exit 1; }
echo "build-image-offline: generated $(basename "$png") ($(stat -c %s "$png") bytes); the server" \
  "runs as uid $user; gRPC published on 127.0.0.1:$PORT"
rm -rf "$out"
echo "build-image-offline: OK"
