#!/usr/bin/env bash
# The main job on embedded defaults, on a fresh machine: installs the one system package the
# build needs (libpcsclite-dev, for PC/SC), builds, and runs `tsm demo` (a TSM node with SQLite
# and a software key store, a provider, a CAP, three simulated phones, deployments over the air).
# Extra arguments go to `tsm demo` (see `tsm demo --help`), e.g. `bash scripts/demo.sh --phones 5`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg-query -W -f='${Status}' libpcsclite-dev 2>/dev/null | grep -q "install ok installed"; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq libpcsclite-dev
fi
exec cargo run --quiet --release -p tsm-cli --bin tsm -- demo "$@"
