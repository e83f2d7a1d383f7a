#!/usr/bin/env bash
# Prints, one per line, the Debian packages this machine still needs to build and run Concord, and
# with `--tests` also what only the test suite needs (Chromium, for the console's browser tests).
# `setup.sh` installs what this prints; `tests/setup_script.rs` runs it against fake package
# databases and PATHs.
#
# Every check asks for the exact thing the build uses, never for something that merely looks like
# it: a file or command that another package also ships must not count. (Once a glob for
# `libclang*.so*` matched `libclang-cpp.so.14`, which a fresh machine ships without `libclang.so`,
# so setup skipped libclang and the RocksDB build failed in bindgen.) So:
# - C/C++ toolchain and libclang: asked of dpkg by package name. bindgen loads `libclang.so` and
#   needs clang's own headers; `libclang-dev` brings both.
# - Node.js, npm and Python's venv: asked of the program itself (any Node.js 18+ with its npm,
#   from Debian or elsewhere; a Python that can create a virtualenv with pip).
#
# For tests: CONCORD_SETUP_DPKG_ADMINDIR points dpkg at another package database (default: the
# machine's own), and PATH decides which programs exist.
set -euo pipefail

admindir="${CONCORD_SETUP_DPKG_ADMINDIR:-/var/lib/dpkg}"

installed() {
  local status
  status=$(dpkg-query --admindir="$admindir" -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) || return 1
  [[ "$status" == ii* ]]
}

have() { command -v "$1" >/dev/null 2>&1; }

need=()
# gcc, g++, make and the C library's headers: RocksDB's C++, libFuzzer, jemalloc.
installed build-essential || need+=(build-essential)
installed libclang-dev || need+=(libclang-dev)
installed pkg-config || installed pkgconf || need+=(pkg-config)
# rustup (when Rust is missing) and the contract test's readiness probe.
installed curl || need+=(curl)
installed ca-certificates || need+=(ca-certificates)
# The contract test runs schemathesis in a virtualenv.
if ! have python3; then
  need+=(python3 python3-venv)
elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
# The JavaScript client tests (tests/js) need Node.js 18 or newer and npm.
if ! have node || ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' >/dev/null 2>&1; then
  need+=(nodejs)
fi
if ! have npm || ! npm --version >/dev/null 2>&1; then
  need+=(npm)
fi

# The console's end-to-end tests drive Debian's Chromium (never a browser a test tool downloads).
# Asked of dpkg by name: a `chromium` command from elsewhere (a snap stub) is not the browser.
if [ "${1:-}" = "--tests" ]; then
  installed chromium || need+=(chromium)
fi

if [ "${#need[@]}" -gt 0 ]; then
  printf '%s\n' "${need[@]}"
fi
