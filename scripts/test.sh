#!/usr/bin/env bash
# The one command that runs every test on a fresh machine: installs what the tests need
# (Debian packages, Python tools), then builds and runs the whole suite.
#   bash scripts/test.sh            # everything
#   TSM_SKIP_INSTALL=1 bash scripts/test.sh   # skip package installation (already done)
#   TSM_FUZZ_SECONDS=60 bash scripts/test.sh  # longer fuzzing per target (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
log() { printf '\n== %s\n' "$*"; }

if [ "${TSM_SKIP_INSTALL:-0}" != 1 ]; then
  log "installing system packages"
  bash scripts/install-deps.sh
  log "interop virtualenv (yubikit, Py-GP, pyscard)"
  bash scripts/python-env.sh >/dev/null
fi

log "cargo build (workspace, all targets)"
cargo build --workspace --all-targets --locked

log "unit, integration and known-answer tests"
# The PC/SC interop test runs alone below: it starts pcscd, one per machine.
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast -E 'not binary(interop_pcsc)'
else
  cargo test --workspace --locked --no-fail-fast -- --skip pcsc_interop_
fi
# nextest does not run doctests
cargo test --workspace --locked --doc

log "PC/SC interop: pcscd+vpcd in a network namespace, the simulated card, opensc-tool, yubikit, Py-GP, tsm gp"
# Skips with a loud message when not root or without network namespaces.
cargo test -p tsm-cli --locked --test interop_pcsc -- --nocapture

log "fuzz smoke run"
bash scripts/fuzz.sh "${TSM_FUZZ_SECONDS:-20}"

log "all tests passed"
