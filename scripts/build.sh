#!/usr/bin/env bash
# Configures and builds dartserve (Release) into ${BUILD_DIR:-build}. Extra args go to CMake's
# configure step; TARGET="<name> ..." builds those targets instead of all.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD_DIR" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@"
elif [ $# -gt 0 ]; then
  cmake -S . -B "$BUILD_DIR" "$@"
fi
targets=()
read -r -d '' -a targets <<< "${TARGET:-}" || true  # split on blanks and newlines
cmake --build "$BUILD_DIR" --parallel "${BUILD_JOBS:-$(nproc)}" ${TARGET:+--target "${targets[@]}"}
