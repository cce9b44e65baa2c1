#!/usr/bin/env bash
# Runs every cargo-fuzz target for N seconds (default 20). Needs the nightly toolchain; installs
# cargo-fuzz if missing. Skips (with a message) when no nightly toolchain is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
if ! rustup toolchain list 2>/dev/null | grep -q nightly; then
  echo "fuzz: no nightly toolchain; skipping (install one with: rustup toolchain install nightly)"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# Seed the CAP corpus with the real CAP files (test fixtures; the corpus is not committed).
mkdir -p fuzz/corpus/cap && cp -n testdata/vectors/cap/*.cap fuzz/corpus/cap/ 2>/dev/null || true
targets=$(cargo +nightly fuzz list --fuzz-dir fuzz)
# Build every target before fuzzing any, so a build failure is told apart from a crash found by
# the fuzzer. A CI run once saw the linker die with SIGBUS (signal 7) on one target while the
# others had linked: that is the build machine, not our code, so one failed build is retried
# once, with the disk space printed; a second failure fails the run.
for t in $targets; do
  if ! cargo +nightly fuzz build --fuzz-dir fuzz "$t" >"/tmp/fuzz-build-$t.log" 2>&1; then
    tail -5 "/tmp/fuzz-build-$t.log"
    echo "fuzz: building $t failed; disk space:"; df -h . /tmp || true
    echo "fuzz: retrying the build of $t once"
    cargo +nightly fuzz build --fuzz-dir fuzz "$t" >"/tmp/fuzz-build-$t.log" 2>&1 || {
      tail -40 "/tmp/fuzz-build-$t.log"; echo "fuzz: building $t FAILED twice"; exit 1; }
  fi
done
for t in $targets; do
  echo "fuzz: $t for ${secs}s"
  cargo +nightly fuzz run --fuzz-dir fuzz "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 >"/tmp/fuzz-$t.log" 2>&1 || {
    tail -40 "/tmp/fuzz-$t.log"; echo "fuzz: $t FAILED"; exit 1; }
  grep -E "^(#[0-9]+|Done)" "/tmp/fuzz-$t.log" | tail -1
done
