#!/usr/bin/env bash
# Builds trimlm with AddressSanitizer + UndefinedBehaviorSanitizer and runs
# the test suite on that build.
#
#   tools/sanitize.sh             unit tests and the synthetic reference tests
#   tools/sanitize.sh --real      the real-model tests too, but the three
#                                 longest (see below); tools/test.sh runs this
#   tools/sanitize.sh --real-all  every real-model test
#
# The build (build-asan, -DTLM_SANITIZE=ON) allocates with libc malloc
# instead of mimalloc (runtime/alloc.h) so that ASan sees every block, and
# stops at the first error of either sanitizer, leaks included. The fuzz
# replay tests run here too, so every seed and regression input is checked
# under the sanitizers on each run.
#
# The real-model tests run the default model (downloaded by the
# pull_default_model fixture unless cached) through the sanitized build,
# several times slower than Release. Measured on a 2-core machine under a
# load average of 7-11 (other builds beside it), tests with -j2: 14 min for
# --real (eval_mc_real and eval_ppl_real 2 min each, cli_run_real and
# realmodel_greedy 1, the others under a minute each), and 23 min of CPU
# more for the three longest: quant_model_real 11 min, drop_real 7,
# convert_realmodel 5. --real leaves those three out: they calibrate and
# convert the whole model several times (int8, int4 round-to-nearest and
# activation-aware, each drop policy), code that runs under the sanitizers
# here anyway, on the real model in calib_realmodel (the calibration pass)
# and on synthetic models of every shape in quant_model_synthetic,
# convert_synthetic and drop_synthetic (conversion, quantization, dropping).
# What --real adds is the real model's own file, tokenizer, chat template and
# forward pass under the sanitizers: load and dequantize (gguf_*_realmodel),
# tokenizer_smollm2, chat_template_smollm2, run/chat (cli_run_real,
# chat_tmux_real, realmodel_greedy), eval (eval_ppl_real, eval_mc_real).
#
# Environment: CC (default gcc; clang works too), TLM_SANITIZE_BUILD
# (default build-asan), TLM_JOBS (build and test parallelism, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

REAL=0
for arg in "$@"; do
  case $arg in
    --real) REAL=1 ;;
    --real-all) REAL=2 ;;
    *) echo "usage: tools/sanitize.sh [--real|--real-all]" >&2; exit 2 ;;
  esac
done
# The real-model tests --real leaves out (see above).
REAL_LONG='^(quant_model_real|drop_real|convert_realmodel)$'
BUILD=${TLM_SANITIZE_BUILD:-build-asan}
JOBS=${TLM_JOBS:-2}
CC=${CC:-gcc}

# Python tests load libtrimlm.so through ctypes, which only works with the
# ASan runtime loaded first: it is preloaded into every process the tests
# start (for clang, whose runtime is static by default, the build links the
# shared one so that both agree).
# With clang's shared runtime, LeakSanitizer crashes in its stop-the-world
# tracer when preloaded into Python, so leaks are checked in the gcc run (the
# default) and by the fuzzers only.
link_flags=()
leaks=1
if "$CC" --version | grep -q clang; then
  asan_rt=$("$CC" -print-file-name=libclang_rt.asan-x86_64.so)
  link_flags=(-DCMAKE_EXE_LINKER_FLAGS=-shared-libsan -DCMAKE_SHARED_LINKER_FLAGS=-shared-libsan)
  leaks=0
else
  asan_rt=$("$CC" -print-file-name=libasan.so)
fi
if [ ! -e "$asan_rt" ]; then
  echo "sanitize.sh: no shared ASan runtime for $CC ($asan_rt)" >&2
  exit 2
fi

cmake -S . -B "$BUILD" -DCMAKE_C_COMPILER="$CC" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTLM_SANITIZE=ON \
  "${link_flags[@]}"
cmake --build "$BUILD" -j"$JOBS"

# Abort (not exit 1) on a sanitizer error, so that a test expecting a
# failing exit status cannot mistake a sanitizer report for it.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=$leaks:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:abort_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/fuzz/lsan.supp:print_suppressions=0}
export LD_PRELOAD="$asan_rt${LD_PRELOAD:+:$LD_PRELOAD}"

# The llamacpp tests are left out: they add llama.cpp's numbers to trimlm
# code paths that other tests already run here (convert --to gguf, eval
# --ppl), and llama.cpp's own binaries are not built with the sanitizers.
# ctest-junit.xml is what tools/test.sh counts the skips from.
junit=$PWD/$BUILD/ctest-junit.xml
if [ "$REAL" = 2 ]; then
  ctest --test-dir "$BUILD" --output-on-failure -j"$JOBS" -LE llamacpp --output-junit "$junit"
elif [ "$REAL" = 1 ]; then
  ctest --test-dir "$BUILD" --output-on-failure -j"$JOBS" -LE llamacpp -E "$REAL_LONG" --output-junit "$junit"
else
  ctest --test-dir "$BUILD" --output-on-failure -j"$JOBS" -LE 'realmodel|llamacpp' --output-junit "$junit"
fi
