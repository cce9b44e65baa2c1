#!/usr/bin/env bash
# Creates (once) the Python virtualenv of the independent GlobalPlatform clients that the
# interop tests drive against the simulated card through pcscd:
#   yubikit (package yubikey-manager): a generic SCP03 host, yubikit.core.smartcard.scp
#   Py-GP   (package py-gp):           SCP02/SCP03 host with list, install, delete
#   pyscard:                            PC/SC for both
# Py-GP needs two fixes on Linux (see shared notes "pcsc-and-peers"): its bundled PC/SC module
# is Windows-only, so it is replaced by a re-export of pyscard's identical smartcard.scard, and
# it needs cryptography<37.
#
# Idempotent: a stamp file records what was installed; a second run only checks the imports.
#   bash scripts/python-env.sh            # creates or checks .venv-interop/
#   TSM_VENV=/path bash scripts/python-env.sh
# Prints the venv's python on its last line of stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TSM_VENV:-$(pwd)/.venv-interop}
# Bump when the recipe changes so existing venvs are rebuilt.
recipe="v1 yubikey-manager==5.9.* py-gp==1.0.0 pyscard cryptography<37"
stamp="$venv/.tsm-interop-stamp"

check() {
  "$venv/bin/python" - <<'PY' >/dev/null 2>&1
import smartcard.scard
import yubikit.core.smartcard.scp
import pygp.connection.pcsc as p
assert hasattr(p, "SCardEstablishContext")
import cryptography
assert int(cryptography.__version__.split(".")[0]) < 37
PY
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$recipe" ] && check; then
  echo "$venv/bin/python"
  exit 0
fi

py=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv" >&2
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install "pyscard" "yubikey-manager==5.9.*" >&2
# Py-GP pins nothing; it breaks with cryptography >= 37 (removed backend arguments). Installing
# it after yubikit and pinning cryptography here wins over yubikit's looser requirement.
"${pip[@]}" install "py-gp==1.0.0" "cryptography<37" >&2

# Fix 1: Py-GP's PC/SC module is a Windows-only binding; pyscard's smartcard.scard has the
# same names and constants.
pcsc_init=$("$venv/bin/python" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("pygp")
print(os.path.join(os.path.dirname(spec.origin), "connection", "pcsc", "__init__.py"))
PY
)
printf 'from smartcard.scard import *\n' >"$pcsc_init"

if ! check; then
  echo "python-env: the interop venv at $venv does not import yubikit, Py-GP and pyscard" >&2
  "$venv/bin/python" -c 'import smartcard.scard, yubikit.core.smartcard.scp, pygp.connection.pcsc' >&2 || true
  exit 1
fi
echo "$recipe" >"$stamp"
echo "$venv/bin/python"
