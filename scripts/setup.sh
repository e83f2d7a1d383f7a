#!/usr/bin/env bash
# Installs what building and testing Concord needs on a fresh Debian machine, and puts cargo on
# PATH. Sourced by run-node.sh, test.sh and .ci/run. What counts as missing is decided by
# needs.sh (exact packages and working programs, never look-alike files): a C/C++ toolchain and
# libclang (RocksDB is compiled from source by the rocksdb crate, through bindgen), curl, Python's
# venv (the contract test), Node.js and npm (the JavaScript client tests), and Rust when missing.
set -euo pipefail

_concord_scripts="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# CONCORD_SETUP_TESTS=1 (test.sh) adds what only the tests need.
_concord_for=()
if [ "${CONCORD_SETUP_TESTS:-0}" = 1 ]; then _concord_for=(--tests); fi
mapfile -t _concord_need < <("$_concord_scripts/needs.sh" "${_concord_for[@]}")
if [ "${#_concord_need[@]}" -gt 0 ]; then
  echo "setup: installing ${_concord_need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${_concord_need[@]}" >/dev/null
  mapfile -t _concord_still < <("$_concord_scripts/needs.sh" "${_concord_for[@]}")
  if [ "${#_concord_still[@]}" -gt 0 ]; then
    echo "setup: still missing after apt-get install: ${_concord_still[*]}" >&2
    exit 1
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing Rust with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
