#!/usr/bin/env bash
# Builds trimlm from scratch and runs the whole test suite, in stages:
#
#   neon      the kernel tests cross-compiled for aarch64, run under qemu
#             (tools/cross-neon.sh)
#   sanitize  the unit and synthetic-model tests on an AddressSanitizer +
#             UndefinedBehaviorSanitizer build (tools/sanitize.sh)
#   fuzz      a short libFuzzer run of every parser target
#             (tools/fuzz.sh, TLM_FUZZ_SECONDS per target, default 10), on a
#             clang build of the whole tree with warnings as errors
#   main      the Release build (gcc, warnings as errors) and every ctest
#             test, the real-model tier
#             included (the default model is pulled into
#             ${XDG_CACHE_HOME:-$HOME/.cache}/trimlm/models when missing)
#
# It first installs what is missing (tools/install-deps.sh). Every stage runs
# even when an earlier one fails; the exit status is non-zero if any failed.
# TLM_TEST_STAGES="main sanitize" (for example) runs a subset.
set -uo pipefail
cd "$(dirname "$0")/.."

STAGES=${TLM_TEST_STAGES:-neon sanitize fuzz main}

want() { [[ " $STAGES " == *" $1 "* ]]; }

tools/install-deps.sh || exit 1
if want neon; then tools/install-deps.sh --cross-arm || exit 1; fi

failed=()
passed=0
run_stage() {
  local name=$1; shift
  echo
  echo "==== $name: $*"
  local t0=$SECONDS
  if "$@"; then
    echo "==== $name: passed ($((SECONDS - t0)) s)"
    passed=$((passed + 1))
  else
    echo "==== $name: FAILED ($((SECONDS - t0)) s)"
    failed+=("$name")
  fi
}

main_stage() {
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DTLM_WERROR=ON &&
    cmake --build build -j"$(nproc)" &&
    ctest --test-dir build --output-on-failure -j2
}

want neon && run_stage neon env TLM_WERROR=ON tools/cross-neon.sh
want sanitize && run_stage sanitize tools/sanitize.sh
want fuzz && run_stage fuzz env TLM_WERROR=ON tools/fuzz.sh "${TLM_FUZZ_SECONDS:-10}"
want main && run_stage main main_stage

echo
[ ${#failed[@]} -gt 0 ] && echo "failed stages: ${failed[*]}"
echo "stages: $passed passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
