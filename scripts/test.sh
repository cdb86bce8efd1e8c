#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 machine: install dependencies, build, run CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
# Each test sets its own torch thread count; OpenMP must not oversubscribe the parallel runner.
export OMP_NUM_THREADS=1
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure --parallel "$(nproc)" "$@"

# The scheduler's threading under ThreadSanitizer (torch-free, so this build is small).
BUILD_DIR=${TSAN_BUILD_DIR:-build-tsan} TARGET=scheduler_test scripts/build.sh \
  -DDARTSERVE_SANITIZER=thread -DCMAKE_BUILD_TYPE=RelWithDebInfo
TSAN_OPTIONS=halt_on_error=1 "${TSAN_BUILD_DIR:-build-tsan}"/tests/scheduler_test
