#!/usr/bin/env bash
# Cross-compiles the kernel and quantized-format unit tests for 64-bit Arm
# and runs them under qemu-aarch64: the NEON kernels against the scalar
# reference, once on an emulated CPU with the int8 dot-product extension
# (SDOT) and once on one without it (the widening-multiply fallback).
#
# Only the kernels + formats library (trimlm_kernels) and its tests are built:
# the runtime's third-party libraries (oneDNN, mimalloc, pcre2, ...) are not
# installed for arm64, so their look-ups are answered with placeholders that
# no target built here links.
#
#   tools/cross-neon.sh            configure, build, run (build dir: build-arm)
#   TLM_CROSS_BUILD=DIR tools/cross-neon.sh
#   TLM_WERROR=ON tools/cross-neon.sh   warnings are errors (tools/test.sh)
#
# Needs gcc-aarch64-linux-gnu, qemu-user and libcmocka-dev:arm64:
# `tools/install-deps.sh --cross-arm` installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${TLM_CROSS_BUILD:-build-arm}
SYSROOT=/usr/aarch64-linux-gnu
MULTIARCH_LIB=/usr/lib/aarch64-linux-gnu
TESTS=(test_qformat test_qkernels test_gguf_kernels test_kernels_standalone)
CPUS=(max cortex-a53) # with SDOT (Armv8.4+ features) / plain Armv8.0 NEON

for tool in aarch64-linux-gnu-gcc qemu-aarch64 cmake; do
  if ! command -v "$tool" >/dev/null; then
    echo "cross-neon: '$tool' not found; run tools/install-deps.sh --cross-arm" >&2
    exit 1
  fi
done
if [ ! -e "$MULTIARCH_LIB/libcmocka.so" ]; then
  echo "cross-neon: cmocka for arm64 not found ($MULTIARCH_LIB/libcmocka.so);" \
       "run tools/install-deps.sh --cross-arm" >&2
  exit 1
fi

# Every library that cmake/Dependencies.cmake requires, as it lists them.
mkdir -p "$BUILD/no-arm64-deps"
placeholders=()
for dep in $(sed -n 's/^ *tlm_require_lib( *\([A-Za-z0-9_]*\) .*/\1/p' cmake/Dependencies.cmake); do
  placeholders+=("-D${dep}_LIB=${dep}-not-built-for-arm64" "-D${dep}_INC=$PWD/$BUILD/no-arm64-deps")
done

cmake -S . -B "$BUILD" -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64.cmake \
  -DCMAKE_BUILD_TYPE=Release "${placeholders[@]}" \
  -DCMOCKA_LIB="$MULTIARCH_LIB/libcmocka.so" -DCMOCKA_INC=/usr/include \
  -DTLM_WERROR="${TLM_WERROR:-OFF}" >/dev/null
cmake --build "$BUILD" -j2 --target "${TESTS[@]}"

failed=0
for cpu in "${CPUS[@]}"; do
  for t in "${TESTS[@]}"; do
    echo "== $t on qemu-aarch64 -cpu $cpu"
    if ! qemu-aarch64 -cpu "$cpu" -L "$SYSROOT" -E LD_LIBRARY_PATH="$MULTIARCH_LIB" \
         "$BUILD/tests/$t"; then
      echo "cross-neon: $t FAILED on -cpu $cpu" >&2
      failed=$((failed + 1))
    fi
  done
done
total=$(( ${#TESTS[@]} * ${#CPUS[@]} ))
echo "cross-neon: $((total - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
