#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 machine: install dependencies, build, run CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
# Each test sets its own torch thread count; OpenMP must not oversubscribe the parallel runner.
export OMP_NUM_THREADS=1
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure --parallel "$(nproc)" "$@"

# AddressSanitizer and UndefinedBehaviorSanitizer (leaks included) over the torch-free layers'
# tests: the scheduler, the server (the gRPC service, metrics, HTTP API, OpenAI endpoint, fault
# injection) and the client (docs/reliability.md, "Sanitizers").
ASAN_TESTS="scheduler_test service_test metrics_test fault_injection_test http_api_test
  openai_images_test loadgen_test terminal_test png_test"
BUILD_DIR=${ASAN_BUILD_DIR:-build-asan} TARGET="$ASAN_TESTS" scripts/build.sh \
  -DDARTSERVE_SANITIZER=address,undefined -DCMAKE_BUILD_TYPE=RelWithDebInfo
for t in $ASAN_TESTS; do
  "${ASAN_BUILD_DIR:-build-asan}/tests/$t" --gtest_brief=1
done

# The scheduler's threading under ThreadSanitizer (torch-free, so this build is small).
BUILD_DIR=${TSAN_BUILD_DIR:-build-tsan} TARGET=scheduler_test scripts/build.sh \
  -DDARTSERVE_SANITIZER=thread -DCMAKE_BUILD_TYPE=RelWithDebInfo
TSAN_OPTIONS=halt_on_error=1 "${TSAN_BUILD_DIR:-build-tsan}"/tests/scheduler_test

# Clang's thread-safety analysis of the lock annotations (ABSL_GUARDED_BY and friends): a clang
# build, warnings as errors, of the torch-free targets that carry them (the scheduler and its
# test, the server library). Compiling is the check; the scheduler's tests also run, built by
# clang.
BUILD_DIR=${CLANG_BUILD_DIR:-build-clang} TARGET=scheduler_test scripts/build.sh \
  -DCMAKE_CXX_COMPILER="$(command -v clang++)" \
  "-DCMAKE_CXX_FLAGS=-Wthread-safety -Werror=thread-safety"
BUILD_DIR=${CLANG_BUILD_DIR:-build-clang} TARGET=dartserve_server scripts/build.sh
"${CLANG_BUILD_DIR:-build-clang}"/tests/scheduler_test

# The parsers' libFuzzer targets (docs/reliability.md, "Fuzzing"), built by clang with
# AddressSanitizer and UndefinedBehaviorSanitizer as scripts/fuzz.sh builds them, replay their
# checked-in corpora: every seed and every input that once failed (regress_*) must pass again.
# -runs=0 runs each corpus file once and no new inputs, so this is deterministic and quick;
# fuzzing itself is scripts/fuzz.sh's.
FUZZ_TARGETS="safetensors model_config generate_request tokenizer"
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz} \
  TARGET="fuzz_safetensors fuzz_model_config fuzz_generate_request fuzz_tokenizer" \
  scripts/build.sh -DCMAKE_CXX_COMPILER="$(command -v clang++)" -DCMAKE_BUILD_TYPE=Debug \
  -DDARTSERVE_FUZZ=ON -DDARTSERVE_BUILD_TESTS=OFF
for t in $FUZZ_TARGETS; do
  "${FUZZ_BUILD_DIR:-build-fuzz}/fuzz/fuzz_$t" -runs=0 "fuzz/corpus/$t"
done
