#!/usr/bin/env bash
# The main job from a fresh Debian 12 machine: install dependencies, build, and generate images
# with the shipped model (one per class, with their denoising previews) into out/generate.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
exec "${BUILD_DIR:-build}"/tools/dartserve-generate --checkpoint weights/fmnist-dart \
  --per_class 8 --guidance 2 --previews --out out/generate "$@"
