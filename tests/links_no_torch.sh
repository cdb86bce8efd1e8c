#!/bin/sh
# Fails when any of the given executables loads LibTorch (libtorch*, libc10*), directly or
# through another library: the torch-free layers (common, scheduler, the metrics, client) and
# their tests must stay so (docs/design.md, "Layers").
set -u
status=0
for binary in "$@"; do
  if ! libraries=$(ldd "$binary"); then
    echo "ldd failed on $binary" >&2
    status=1
  elif printf '%s\n' "$libraries" | grep -E 'lib(torch|c10)'; then
    echo "$binary loads LibTorch" >&2
    status=1
  fi
done
exit "$status"
