#!/usr/bin/env bash
# Builds trimlm from scratch and runs the whole test suite, in stages:
#
#   neon      the kernel tests cross-compiled for aarch64, run under qemu
#             (tools/cross-neon.sh)
#   sanitize  the unit, synthetic-model and real-model tests on an
#             AddressSanitizer + UndefinedBehaviorSanitizer build
#             (tools/sanitize.sh --real: all but the three longest real-model
#             tests, see there)
#   fuzz      a short libFuzzer run of every parser target
#             (tools/fuzz.sh, TLM_FUZZ_SECONDS per target, default 10), on a
#             clang build of the whole tree with warnings as errors
#   llamacpp  builds llama.cpp's tools from the pinned source, once: they are
#             kept in ${XDG_CACHE_HOME:-$HOME/.cache}/trimlm/llama.cpp-<version>
#             (bench/compare-llamacpp --build-only; about 15 min on 2 cores
#             the first time, nothing after)
#   main      the Release build (gcc, warnings as errors) and every ctest test, the real-model tier
#             (the default model is pulled into
#             ${XDG_CACHE_HOME:-$HOME/.cache}/trimlm/models when missing) and
#             the comparisons with llama.cpp (label llamacpp) included
#
# A test that skips fails its stage unless tests/skip-allowed.txt lists it
# with a reason (tools/skip-report.py reads ctest's JUnit output); the summary
# gives each stage's time and each ctest stage's count of skips.
#
# It first installs what is missing (tools/install-deps.sh). Every stage runs
# even when an earlier one fails; the exit status is non-zero if any failed.
# TLM_TEST_STAGES="main sanitize" (for example) runs a subset; without the
# llamacpp stage, the llamacpp tests find the tools in the cache or in
# $TLM_LLAMACPP_BIN, or skip (and so fail).
set -uo pipefail
cd "$(dirname "$0")/.."

STAGES=${TLM_TEST_STAGES:-neon sanitize fuzz llamacpp main}
BUDGET_MIN=45  # the whole run should stay below this on a 2-core machine
PYTHON=python3; [ -x .venv/bin/python ] && PYTHON=.venv/bin/python

want() { [[ " $STAGES " == *" $1 "* ]]; }

tools/install-deps.sh || exit 1
if want neon; then tools/install-deps.sh --cross-arm || exit 1; fi

failed=()
passed=0
summary=()    # one line per stage: name, result, time
skip_lines=() # skip-report.py's count line of each ctest stage
T_START=$SECONDS
run_stage() {
  local name=$1; shift
  echo
  echo "==== $name: $*"
  local t0=$SECONDS result
  if "$@"; then
    result=passed
    passed=$((passed + 1))
  else
    result=FAILED
    failed+=("$name")
  fi
  local dt=$((SECONDS - t0))
  echo "==== $name: $result ($dt s)"
  summary+=("$(printf '%-9s %-7s %5d s (%d min %02d s)' "$name" "$result" "$dt" $((dt / 60)) $((dt % 60)))")
}

# check_skips STAGE JUNIT: lists the skips of a ctest run and fails on one
# that tests/skip-allowed.txt does not allow.
check_skips() {
  local out rc
  out=$("$PYTHON" tools/skip-report.py --allow tests/skip-allowed.txt --stage "$1" "$2")
  rc=$?
  echo "$out"
  skip_lines+=("$(echo "$out" | tail -n 1)")
  return $rc
}

sanitize_stage() {
  local junit=${TLM_SANITIZE_BUILD:-build-asan}/ctest-junit.xml rc=0
  rm -f "$junit"
  tools/sanitize.sh --real || rc=1
  check_skips sanitize "$junit" || rc=1
  return $rc
}

llamacpp_stage() {
  local bin
  bin=$(nice "$PYTHON" bench/compare-llamacpp --build-only --jobs "$(nproc)") || return 1
  export TLM_LLAMACPP_BIN=$bin
  echo "llama.cpp tools: $bin"
}

main_stage() {
  local junit=$PWD/build/ctest-junit.xml rc=0
  rm -f "$junit"
  if cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DTLM_WERROR=ON && cmake --build build -j"$(nproc)"; then
    ctest --test-dir build --output-on-failure -j2 --output-junit "$junit" || rc=1
  else
    rc=1
  fi
  check_skips main "$junit" || rc=1
  return $rc
}

want neon && run_stage neon env TLM_WERROR=ON tools/cross-neon.sh
want sanitize && run_stage sanitize sanitize_stage
want fuzz && run_stage fuzz env TLM_WERROR=ON tools/fuzz.sh "${TLM_FUZZ_SECONDS:-10}"
want llamacpp && run_stage llamacpp llamacpp_stage
want main && run_stage main main_stage

total=$((SECONDS - T_START))
echo
echo "==== summary"
printf '%s\n' "${summary[@]}"
[ ${#skip_lines[@]} -gt 0 ] && printf '%s\n' "${skip_lines[@]}"
over=""; [ $total -gt $((BUDGET_MIN * 60)) ] && over=" (OVER the ${BUDGET_MIN} min budget)"
printf 'total     %d min %02d s%s\n' $((total / 60)) $((total % 60)) "$over"
[ ${#failed[@]} -gt 0 ] && echo "failed stages: ${failed[*]}"
echo "stages: $passed passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
