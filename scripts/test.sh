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

log "PostgreSQL for the store tests (127.0.0.1:5432)"
# The store and key store tests run on SQLite and PostgreSQL; an unreachable server fails
# them (see docs/configuration.md, "Tests"). Start the local cluster when it is down.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not reachable at 127.0.0.1:5432" >&2; exit 1; }

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
# For the record of the machine the run used (a full run needs several GB for target dirs).
df -h . | tail -1
