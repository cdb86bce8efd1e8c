#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, docs/reliability.md "Fuzzing") with clang in their own
# build folder and runs each in turn for a bounded time.
#
#   scripts/fuzz.sh                  every target for 30 s
#   scripts/fuzz.sh 3600             every target for an hour
#   scripts/fuzz.sh 0 tokenizer      one target until it finds something or is stopped (Ctrl-C)
#   scripts/fuzz.sh 600 safetensors model_config
#
# Arguments: seconds per target (default 30; 0: no limit), then target names (default: all of
# safetensors, model_config, generate_request, tokenizer).
# Environment: FUZZ_BUILD_DIR (default build-fuzz), JOBS (build parallelism, default nproc),
# FUZZ_ARGS (extra libFuzzer flags, e.g. "-runs=1000000" or "-use_value_profile=1").
#
# Each target starts from its checked-in seeds (fuzz/corpus/<target>, only read) plus what earlier
# runs found (<build>/corpus/<target>, where new inputs go), with its dictionary when it has one
# (fuzz/dict/<target>.dict). A crash, leak, sanitizer report, failed FUZZ_CHECK, input slower than
# 10 s or over 2 GB of memory stops that target and fails the script; the input is saved under
# <build>/artifacts/<target>/ and reproduced with: <build>/fuzz/fuzz_<target> <that file>
#
# CI does not fuzz: scripts/test.sh builds the same targets and replays each checked-in corpus
# once (-runs=0), so a seed or a regress_* input that fails again fails the suite.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(safetensors model_config generate_request tokenizer)
fi
build=${FUZZ_BUILD_DIR:-build-fuzz}

if ! command -v clang++ >/dev/null; then
  echo "fuzz: clang++ is missing (scripts/install-deps.sh installs it)" >&2
  exit 1
fi
if [ ! -f "$build/CMakeCache.txt" ]; then
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  # Debug keeps assertions (nlohmann_json's among them); the targets add -O1 themselves.
  cmake -S . -B "$build" "${generator[@]}" -DCMAKE_CXX_COMPILER="$(command -v clang++)" \
    -DCMAKE_BUILD_TYPE=Debug -DDARTSERVE_FUZZ=ON -DDARTSERVE_BUILD_TESTS=OFF
fi
cmake --build "$build" --parallel "${JOBS:-$(nproc)}" \
  --target "${targets[@]/#/fuzz_}"

# LeakSanitizer runs after every input; UBSan reports come with a stack.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

failed=()
for t in "${targets[@]}"; do
  corpus="$build/corpus/$t"
  artifacts="$build/artifacts/$t"
  log="$build/logs/$t.log"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=("-dict=fuzz/dict/$t.dict")
  echo "fuzz: $t for ${seconds}s (log: $log)"
  start=$(date +%s)
  # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
  # -max_len: without it libFuzzer grows no input past the largest seed (at least 4 KiB). Seeds
  # longer than this (the 60 KB regress_nested_* inputs) are cut to it when loaded, so a run does
  # not replay them whole; scripts/test.sh's replay does.
  if "$build/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -max_len=8192 -print_final_stats=1 -artifact_prefix="$artifacts/" "${dict[@]}" \
      ${FUZZ_ARGS:-} \
      "$corpus" "fuzz/corpus/$t" >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$t")
  fi
  # The last status line ("#<execs> DONE cov: ... ft: ... corp: ...") and the exec count.
  summary=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  echo "fuzz: $t $status in $(($(date +%s) - start))s, ${execs:-?} executions; ${summary:-no stats}"
  if [ "$status" = FAILED ]; then
    grep -E 'ERROR|FUZZ_CHECK|runtime error|Test unit written' "$log" | head -n 5 >&2 || true
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failed: ${failed[*]} (inputs under $build/artifacts/, logs under $build/logs/)" >&2
  exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran clean"
