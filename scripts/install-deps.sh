#!/usr/bin/env bash
# Installs what building and testing tsm needs on Debian 12: PC/SC (pcscd, the vpcd virtual
# reader, tools), SoftHSM2 for PKCS#11 tests, PostgreSQL for the store tests, and the
# independent GP clients from PyPI.
set -euo pipefail
pkgs=(libpcsclite-dev pcscd vsmartcard-vpcd pcsc-tools opensc softhsm2 swig iproute2 postgresql)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
  # A cluster created just now: let the tests connect as postgres over 127.0.0.1 without a
  # password (the project machines' setup); an existing cluster's access rules are left alone.
  if printf '%s\n' "${missing[@]}" | grep -qx postgresql; then
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
      grep -q '^host all postgres 127.0.0.1/32 trust' "$hba" ||
        $sudo_cmd sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
    done
    $sudo_cmd pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main restart || true
  fi
fi
