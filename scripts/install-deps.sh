#!/usr/bin/env bash
# Installs what building and testing tsm needs on Debian 12: PC/SC (pcscd, the vpcd virtual
# reader, tools), SoftHSM2 for PKCS#11 tests, and the independent GP clients from PyPI.
set -euo pipefail
pkgs=(libpcsclite-dev pcscd vsmartcard-vpcd pcsc-tools opensc softhsm2 swig iproute2)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi
