#!/usr/bin/env bash
# Installs what building and testing trimlm needs on Debian 12, skipping what
# is already there: the C toolchain and libraries (apt) and, for the tests'
# independent reference implementations, a Python virtual environment in
# .venv with numpy, gguf, tokenizers, safetensors, jinja2, openai and selenium (pip).
set -euo pipefail
cd "$(dirname "$0")/.."

# `tools/install-deps.sh --cross-arm`: instead, what tools/cross-neon.sh needs
# to cross-compile the kernel tests for aarch64 and run them under qemu: the
# cross compiler and C library, qemu's user-mode emulator, and cmocka for
# arm64 (a multiarch package, so dpkg learns the arm64 architecture first).
install_cross_arm() {
  local SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  local pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user libcmocka-dev:arm64)
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
  fi
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
}
if [ "${1:-}" = "--cross-arm" ]; then
  install_cross_arm
  exit 0
fi

APT_PKGS=(
  build-essential cmake pkg-config
  libgomp1 libdnnl-dev libmimalloc-dev libcjson-dev libpcre2-dev
  libcurl4-openssl-dev libarchive-dev libssl-dev libcmocka-dev libxxhash-dev
  libedit-dev tmux # trimlm chat: line editing; tests/test_chat_tmux.py drives it in a terminal
  libmicrohttpd-dev # trimlm serve: the HTTP server
  chromium chromium-driver # tests/test_serve_webui.py: the chat page in a headless browser
  nginx-light # tests/test_serve_nginx.py: the scale-out recipe, tools/serve-nginx.conf
  python3 python3-venv
  clang libclang-rt-14-dev libomp-14-dev # tools/fuzz.sh: libFuzzer, sanitizers, OpenMP for clang
)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# openai: tests/test_serve.py talks to `trimlm serve` with OpenAI's own client;
# selenium: tests/test_serve_webui.py drives Debian's chromium through chromedriver
PY_PKGS=(numpy==2.4.6 gguf==0.19.0 tokenizers==0.23.3 safetensors==0.8.0 jinja2==3.1.6 openai==3.51.0
         selenium==4.40.0)
if [ "${TLM_SKIP_VENV:-0}" != 1 ]; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  if ! .venv/bin/python -c 'import numpy, gguf, tokenizers, safetensors, jinja2, openai, selenium' 2>/dev/null; then
    .venv/bin/python -m pip install -q "${PY_PKGS[@]}"
  fi
fi
