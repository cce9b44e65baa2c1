#!/usr/bin/env bash
# A private PC/SC stack for the simulated card: pcscd (with the vpcd virtual reader) and
# `tsm card run` inside a network namespace that has only loopback, so vpcd's TCP port
# (35963, which Debian's vpcd opens on all interfaces) is unreachable from anywhere else.
# PC/SC clients in the normal namespace (opensc-tool, pcsc_scan, yubikit, Py-GP, tsm gp)
# still reach pcscd through its Unix socket /run/pcscd/pcscd.comm. Needs root.
#
#   bash scripts/pcsc-sandbox.sh start     # pcscd + card; waits until the card is in the reader
#   bash scripts/pcsc-sandbox.sh status    # what runs, and the readers pcscd sees
#   bash scripts/pcsc-sandbox.sh stop      # stops both by PID, deletes the namespace
#
# Safe to run twice (start on a running sandbox does nothing) and after a crashed run (stale
# PID files, sockets in /run/pcscd and the namespace are cleaned up first).
#
# Environment:
#   TSM_NETNS          namespace name (default tsm-pcsc)
#   TSM_SANDBOX_DIR    PID files and logs (default /tmp/tsm-pcsc-sandbox)
#   TSM_BIN            the tsm binary (default target/debug/tsm, built when missing)
#   TSM_CARD           0: start pcscd only (run a card yourself with `ip netns exec NS ...`)
#   TSM_CARD_PROFILE   card profile (default uicc)
#   TSM_CARD_STATE     card state file (default $TSM_SANDBOX_DIR/card.json; created if missing)
#   TSM_CARD_ARGS      more arguments for `tsm card run` (e.g. "--card-key env:CARD_KEY -v")
#   TSM_VPCD_PORT      vpcd port (default 35963, reader "Virtual PCD 00 00")
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ns=${TSM_NETNS:-tsm-pcsc}
dir=${TSM_SANDBOX_DIR:-/tmp/tsm-pcsc-sandbox}
port=${TSM_VPCD_PORT:-35963}
run_dir=/run/pcscd
pcscd_pidf=$dir/pcscd.pid
card_pidf=$dir/card.pid

say() { printf 'pcsc-sandbox: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (ip netns, pcscd)"

# Whether PID $1 runs program $2 (or one of "a|b"): alive, not a zombie (a process killed
# after its parent exited may stay one when PID 1 does not reap), and still that program (PID
# reuse).
runs() {
  local pid=$1 want=$2 comm
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [[ "$comm" =~ ^($want)$ ]] || return 1
  alive "$pid"
}

# Whether PID $1 exists and is not a zombie.
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  # Field 3, after the parenthesised command name.
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# The PID in a PID file, if that process is alive and still the program we started there.
live_pid() {
  local f=$1 want=$2 pid
  [ -f "$f" ] || return 1
  pid=$(tr -cd '0-9' <"$f" 2>/dev/null) || return 1
  runs "$pid" "$want" || return 1
  echo "$pid"
}

# Whether the process just started from PID file $1 is alive. Its name is not checked: it is
# the forked shell, then `ip netns exec`, until it has executed the program.
starting() {
  local pid
  pid=$(tr -cd '0-9' <"$1" 2>/dev/null) || return 1
  alive "$pid"
}

# SIGTERM, wait up to $2 tenths of a second, then SIGKILL.
stop_pid() {
  local pid=$1 tenths=${2:-50} i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < tenths; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  say "PID $pid did not stop on SIGTERM; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns"; }

# A pcscd that the socket in /run/pcscd belongs to, if it is alive.
run_dir_pcscd() {
  live_pid "$run_dir/pcscd.pid" pcscd
}

cleanup() {
  local pid
  if pid=$(live_pid "$card_pidf" tsm); then
    say "stopping card (PID $pid)"
    stop_pid "$pid" 50
  fi
  rm -f "$card_pidf"
  if pid=$(live_pid "$pcscd_pidf" pcscd); then
    say "stopping pcscd (PID $pid)"
    stop_pid "$pid" 50
  fi
  rm -f "$pcscd_pidf"
  if ns_exists; then
    # Anything else left in our namespace (e.g. a card started by hand) is ours too.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      alive "$pid" || continue
      say "stopping PID $pid left in namespace $ns ($(cat "/proc/$pid/comm" 2>/dev/null || echo '?'))"
      stop_pid "$pid" 30
    done
    ip netns del "$ns" || say "could not delete namespace $ns"
  fi
  # pcscd killed hard leaves its socket and PID file; a new pcscd refuses to start over them.
  if ! run_dir_pcscd >/dev/null; then
    rm -f "$run_dir/pcscd.comm" "$run_dir/pcscd.pid" "$run_dir/pcscd.pub"
  fi
}

card_in_reader() {
  opensc-tool -l 2>/dev/null | grep -Eq "^[0-9]+ +Yes .*Virtual PCD 00 0$((port - 35963))"
}

status() {
  local ok=0 pid
  if pid=$(live_pid "$pcscd_pidf" pcscd); then say "pcscd running (PID $pid, namespace $ns)"; else say "pcscd not running"; ok=1; fi
  if pid=$(live_pid "$card_pidf" tsm); then say "card running (PID $pid, state $(cat "$dir/card.state" 2>/dev/null))"; else say "card not running"; fi
  ns_exists && say "namespace $ns exists" || say "namespace $ns absent"
  [ $ok -eq 0 ] && opensc-tool -l 2>&1 | sed 's/^/  /' >&2 || true
  return $ok
}

start() {
  local pid i
  mkdir -p "$dir"
  if live_pid "$pcscd_pidf" pcscd >/dev/null && ns_exists && { [ "${TSM_CARD:-1}" = 0 ] || live_pid "$card_pidf" tsm >/dev/null; }; then
    say "already running"
    return 0
  fi
  # A previous run that crashed or half started: clear it all.
  cleanup
  if pid=$(run_dir_pcscd); then
    die "another pcscd (PID $pid) owns $run_dir/pcscd.comm; stop it first (systemctl stop pcscd.socket pcscd)"
  fi
  local tsm=${TSM_BIN:-$root/target/debug/tsm}
  if [ "${TSM_CARD:-1}" != 0 ] && [ ! -x "$tsm" ]; then
    [ -z "${TSM_BIN:-}" ] || die "TSM_BIN=$tsm is not executable"
    say "building tsm"
    (cd "$root" && cargo build -q -p tsm-cli --bin tsm)
  fi

  ip netns add "$ns"
  ip netns exec "$ns" ip link set lo up
  mkdir -p "$run_dir"
  # -f: foreground (we own the PID; logs to the file), -a: APDU log.
  # 9>&-: the daemon must not inherit the lock of this script.
  ip netns exec "$ns" pcscd -f -a </dev/null >"$dir/pcscd.log" 2>&1 9>&- &
  echo $! >"$pcscd_pidf"
  for ((i = 0; i < 100; i++)); do
    [ -S "$run_dir/pcscd.comm" ] && break
    starting "$pcscd_pidf" || { tail -20 "$dir/pcscd.log" >&2; cleanup; die "pcscd exited at start"; }
    sleep 0.1
  done
  [ -S "$run_dir/pcscd.comm" ] || { cleanup; die "pcscd did not create $run_dir/pcscd.comm"; }
  say "pcscd running (PID $(cat "$pcscd_pidf"), namespace $ns, log $dir/pcscd.log)"

  [ "${TSM_CARD:-1}" = 0 ] && return 0
  local state=${TSM_CARD_STATE:-$dir/card.json}
  # shellcheck disable=SC2086 # TSM_CARD_ARGS is a list of words on purpose
  ip netns exec "$ns" "$tsm" card run --profile "${TSM_CARD_PROFILE:-uicc}" --state "$state" \
    --vpcd "127.0.0.1:$port" ${TSM_CARD_ARGS:-} </dev/null >"$dir/card.log" 2>&1 9>&- &
  echo $! >"$card_pidf"
  echo "$state" >"$dir/card.state"
  for ((i = 0; i < 100; i++)); do
    card_in_reader && break
    starting "$card_pidf" || { tail -20 "$dir/card.log" >&2; cleanup; die "the card exited at start"; }
    sleep 0.1
  done
  card_in_reader || { tail -20 "$dir/card.log" >&2; cleanup; die "the card did not appear in the reader"; }
  say "card running (PID $(cat "$card_pidf"), state $state, log $dir/card.log)"
}

# One start/stop at a time on this machine (pcscd and /run/pcscd are machine-wide).
if command -v flock >/dev/null 2>&1; then
  exec 9>"${TMPDIR:-/tmp}/tsm-pcsc-sandbox.lock"
  flock 9
fi

case "${1:-}" in
  start) start ;;
  stop) cleanup; say "stopped" ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status   (see the comment at the top for the environment)" >&2; exit 2 ;;
esac
