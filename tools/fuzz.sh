#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes with libFuzzer + AddressSanitizer +
# UndefinedBehaviorSanitizer.
#
#   tools/fuzz.sh [SECONDS] [TARGET...]     (default: 20 s for each target)
#   tools/fuzz.sh 600                       a longer run
#
# Builds build-fuzz (clang, -DTLM_SANITIZE=ON -DTLM_FUZZ=ON, coverage for the
# whole library), then runs the targets one after the other, each starting
# from its seed corpus (tests/fuzz/corpus/<target>) and the regression inputs
# (tests/fuzz/regressions/<target>). New coverage goes to
# build-fuzz/fuzz-corpus/<target>, which later runs resume from. Prints the
# executions of each target; when one crashes, leaks, times out or runs out
# of memory, its input is copied to tests/fuzz/crashes/<target>/ and the
# script exits with status 1 after the remaining targets have run.
#
# Environment: CC (default clang), TLM_FUZZ_BUILD (default build-fuzz),
# TLM_FUZZ_JOBS (build parallelism, default 2), TLM_WERROR=ON (warnings are
# errors, and the whole tree is built).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SECONDS_PER_TARGET=${1:-20}
shift || true
ALL_TARGETS=(fuzz_gguf fuzz_safetensors fuzz_safetensors_index fuzz_hf_config fuzz_tokenizer_json
  fuzz_tokenize fuzz_model_gguf fuzz_model_tlm fuzz_chat_template fuzz_chat_conv fuzz_eval_mc
  fuzz_registry)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")
BUILD=${TLM_FUZZ_BUILD:-build-fuzz}
CC=${CC:-clang}

if ! command -v "$CC" >/dev/null; then
  echo "fuzz.sh: $CC not found; install the Debian packages 'clang' and 'libclang-rt-14-dev' (tools/install-deps.sh)" >&2
  exit 2
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' >"$probe/p.c"
if ! "$CC" -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" 2>"$probe/err"; then
  cat "$probe/err" >&2
  echo "fuzz.sh: $CC cannot link libFuzzer; install the Debian package 'libclang-rt-14-dev'" >&2
  exit 2
fi

cmake -S . -B "$BUILD" -DCMAKE_C_COMPILER="$CC" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTLM_SANITIZE=ON -DTLM_FUZZ=ON -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link" \
  -DTLM_WERROR="${TLM_WERROR:-OFF}" >/dev/null
# With TLM_WERROR=ON the whole tree is built, so that every file is checked
# for warnings by clang too (tools/test.sh; the main stage checks gcc).
build_targets=(--target "${TARGETS[@]}")
[ "${TLM_WERROR:-OFF}" = ON ] && build_targets=()
cmake --build "$BUILD" -j"${TLM_FUZZ_JOBS:-2}" "${build_targets[@]}" >/dev/null

# One thread: OpenMP worker pools only slow the fuzzer down.
export OMP_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

status=0
summary=()
for t in "${TARGETS[@]}"; do
  work="$BUILD/fuzz-corpus/$t"
  artifacts="$BUILD/fuzz-artifacts/$t"
  mkdir -p "$work" "$artifacts"
  rm -f "$artifacts"/*
  dirs=("$work" "tests/fuzz/corpus/$t")
  [ -d "tests/fuzz/regressions/$t" ] && dirs+=("tests/fuzz/regressions/$t")
  dict=()
  case $t in fuzz_hf_config | fuzz_tokenizer_json | fuzz_safetensors* | fuzz_chat_conv | fuzz_eval_mc | \
    fuzz_registry) dict=(-dict=tests/fuzz/json.dict) ;; esac
  log="$BUILD/fuzz-$t.log"
  echo "== $t: ${SECONDS_PER_TARGET}s"
  rc=0
  "$BUILD/tests/$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=25 -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts/" "${dict[@]}" \
    "${dirs[@]}" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  if [ "$rc" -ne 0 ]; then
    status=1
    mkdir -p "tests/fuzz/crashes/$t"
    found=$(ls "$artifacts" 2>/dev/null || true)
    for f in $found; do cp "$artifacts/$f" "tests/fuzz/crashes/$t/"; done
    echo "   FAILED (exit $rc) after ${execs:-?} executions; inputs: ${found:-none} -> tests/fuzz/crashes/$t/"
    grep -m1 -E 'ERROR: |runtime error:|check failed|SUMMARY' "$log" | sed 's/^/   /' || true
    echo "   log: $log"
    summary+=("$t: FAILED after ${execs:-?} executions")
  else
    echo "   ok: ${execs:-?} executions, ${cov:-cov: ?}"
    summary+=("$t: ${execs:-?} executions, no crash")
  fi
done
echo "== summary"
printf '   %s\n' "${summary[@]}"
exit $status
