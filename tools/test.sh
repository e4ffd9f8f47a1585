#!/usr/bin/env bash
# Builds trimlm from scratch and runs the whole test suite: installs what is
# missing (tools/install-deps.sh), configures ./build (Release), builds with
# every core, and runs ctest. The real-model tests first pull the default
# model into ${XDG_CACHE_HOME:-$HOME/.cache}/trimlm/models (a download only
# when it is not cached yet).
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j2
