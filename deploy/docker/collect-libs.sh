#!/usr/bin/env bash
# Copies the shared libraries that the given executables load, as the dynamic loader resolves
# them on this machine (`ldd`), into DEST as plain files named by their sonames. The Dockerfiles'
# runtime stages take exactly this set, so the image's libraries cannot drift from the ones the
# binaries were built against, and no runtime package list has to be kept by hand.
#
#   deploy/docker/collect-libs.sh DEST BINARY...   (executables or shared libraries)
#
# Left out:
# - glibc's own libraries and the loader: the runtime base image has them, from the same
#   distribution release as the build stage's, and glibc must match its loader exactly.
# - the NVIDIA driver's user-space libraries (libcuda, libnvidia-*): the NVIDIA container
#   runtime mounts the host driver's copies at run time; a copied one would not match the host's
#   kernel module. They are allowed to be unresolved here (a CUDA build stage has no driver).
# Libraries loaded with dlopen are invisible to ldd: a caller passes such a module as one of the
# BINARY arguments (the Dockerfiles pass the server's SentencePiece module, so its own libraries
# are collected), and Dockerfile.cuda copies LibTorch's lib/ folder whole. The CPU image's
# LibTorch and BLAS load nothing that way.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 DEST BINARY..." >&2
  exit 2
fi
dest=$1
shift
mkdir -p "$dest"

glibc='ld-linux.*|libc|libm|libmvec|libpthread|libdl|librt|libresolv|libanl|libutil|libBrokenLocale'
glibc+='|libnss_[a-z0-9_]+'
driver='libcuda|libnvidia-[a-z0-9-]+'
skip_re="^(${glibc}|${driver})\\.so(\\..*)?\$"
missing=0
for binary in "$@"; do
  if [ ! -x "$binary" ]; then
    echo "collect-libs: $binary is not an executable file" >&2
    exit 1
  fi
  # Lines look like "libfoo.so.1 => /path/libfoo.so.1 (0x...)", "libfoo.so.1 => not found",
  # or, for the vDSO and the loader, have no "=>".
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    if [[ "$name" =~ $skip_re ]]; then
      continue
    fi
    if [ "$path" = "not" ] || [ ! -e "$path" ]; then
      echo "collect-libs: $binary needs $name, which does not resolve" >&2
      missing=1
      continue
    fi
    # -L: the file itself, not a symlink (Debian's libblas.so.3 is an alternatives link whose
    # target would not exist in the runtime image).
    cp -L --preserve=mode "$path" "$dest/$name"
  done < <(ldd "$binary")
done
exit "$missing"
