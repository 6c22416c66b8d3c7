#!/usr/bin/env bash
# The project's one test command (README, .ci/run):
#
#   bash scripts/test.sh                  everything
#   bash scripts/test.sh --python-only    skip `cargo test` (still builds), for iterating on tests/interop
#   bash scripts/test.sh [...] -- ARGS    pass ARGS on to pytest, e.g. -- -k retention
#
# Steps: .venv with tests/interop/requirements.txt, node_modules from package-lock.json (Azurite),
# cargo build --workspace --all-targets, cargo test --workspace, then pytest tests/interop against
# the freshly built target/debug/hubcap-emulator and hubcap. Installs are skipped when a stamp shows
# that their inputs did not change. Runs unattended (CI=true, no stdin).
set -euo pipefail

usage() {
  sed -n '2,7s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

python_only=false
pytest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --python-only) python_only=true ;;
    -h | --help) usage; exit 0 ;;
    --) shift; pytest_args=("$@"); break ;;
    *) printf 'test.sh: unknown argument: %s\n' "$1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

step() { printf '\n==> %s\n' "$*"; }
die() { printf '\ntest.sh: error: %s\n' "$*" >&2; exit 1; }
require() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not on PATH: $2"
}

require python3 "install Python 3.9 or later with its venv module (Debian: apt-get install python3 python3-venv)"
require node "install Node.js 20 or later (Debian 13: apt-get install nodejs)"
require npm "install npm (Debian: apt-get install npm)"
require cargo "install the Rust toolchain (rustup) with cargo on PATH"
require sha256sum "install coreutils"

fingerprint() { cat "$@" | sha256sum | cut -d' ' -f1; }

# Azurite 3.35 (package.json) and its dependencies declare Node.js 20 or later; README says the same.
node_major=$(node --version | sed 's/^v\([0-9]*\).*/\1/')
[ "${node_major:-0}" -ge 20 ] 2>/dev/null \
  || die "Node.js $(node --version) is too old: Azurite needs Node.js 20 or later"

# --- System tools: promtool (the /metrics lint) -------------------------------------------------
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    step "installing promtool (Debian package prometheus; its service is kept from starting)"
    # The package ships prometheus.service. A policy-rc.d that answers 101 ("action forbidden")
    # keeps apt from starting any service during this install; it is removed afterwards unless
    # the machine had one of its own.
    policy=/usr/sbin/policy-rc.d
    placed_policy=false
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && placed_policy=true
    fi
    installed=true
    apt-get update -qq >/dev/null \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
      || installed=false
    if [ "$placed_policy" = true ]; then rm -f "$policy"; fi
    [ "$installed" = true ] || die "apt-get install prometheus failed: install promtool by hand"
  else
    die "promtool is missing: install the Debian package prometheus (apt-get install --no-install-recommends prometheus)"
  fi
fi

# --- System libraries: libfuse 3 (tests/interop/fault_fs.py mounts a FUSE filesystem) ----------
if ! ldconfig -p 2>/dev/null | grep -q 'libfuse3\.so\.3'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    step "installing libfuse 3 (Debian package libfuse3-3)"
    { apt-get update -qq >/dev/null \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libfuse3-3 >/dev/null; } \
      || die "apt-get install libfuse3-3 failed: install libfuse 3 by hand"
  else
    die "libfuse 3 is missing: install the Debian package libfuse3-3 (apt-get install libfuse3-3)"
  fi
fi

# --- Python: .venv -------------------------------------------------------------------------------
venv=.venv
requirements=tests/interop/requirements.txt
venv_stamp=$venv/.hubcap-requirements.stamp
system_python=$(python3 -c 'import sys; print(".".join(map(str, sys.version_info[:3])))')
venv_python=$("$venv/bin/python" -c 'import sys; print(".".join(map(str, sys.version_info[:3])))' 2>/dev/null || true)
if [ "$venv_python" != "$system_python" ]; then
  step "creating virtualenv $venv (python $system_python)"
  python3 -m venv --clear "$venv" \
    || die "python3 -m venv failed: install the venv module (Debian: apt-get install python3-venv)"
fi
wanted_venv_stamp="python $system_python, requirements $(fingerprint "$requirements")"
if [ "$(cat "$venv_stamp" 2>/dev/null || true)" = "$wanted_venv_stamp" ]; then
  step "Python test requirements: up to date ($venv)"
else
  step "installing Python test requirements into $venv"
  rm -f "$venv_stamp"
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet -r "$requirements" \
    || die "pip install -r $requirements failed (see above)"
  printf '%s\n' "$wanted_venv_stamp" >"$venv_stamp"
fi

# --- Node: Azurite -------------------------------------------------------------------------------
npm_stamp=node_modules/.hubcap-package-lock.stamp
azurite_bin=$repo_root/node_modules/.bin/azurite-blob
wanted_npm_stamp="node $(node --version), lock $(fingerprint package.json package-lock.json)"
if [ -x "$azurite_bin" ] && [ "$(cat "$npm_stamp" 2>/dev/null || true)" = "$wanted_npm_stamp" ]; then
  step "node_modules: up to date"
else
  step "npm ci (Azurite)"
  npm ci --no-audit --no-fund || die "npm ci failed (see above)"
  [ -x "$azurite_bin" ] || die "npm ci did not install $azurite_bin"
  printf '%s\n' "$wanted_npm_stamp" >"$npm_stamp"
fi

# --- Rust ------------------------------------------------------------------------------------------
step "cargo build --workspace --all-targets"
cargo build --workspace --all-targets || die "cargo build failed (see above)"

target_dir=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') \
  || die "cargo metadata failed: cannot locate the target directory"
emulator_bin=$target_dir/debug/hubcap-emulator
hubcap_bin=$target_dir/debug/hubcap
for bin in "$emulator_bin" "$hubcap_bin"; do
  [ -x "$bin" ] || die "cargo build did not produce $bin"
done

cargo_result="skipped (--python-only)"
if [ "$python_only" = false ]; then
  step "cargo test --workspace"
  if cargo test --workspace; then
    cargo_result=passed
  else
    cargo_result="FAILED (exit $?)"
  fi
fi

# --- Python interop tests ------------------------------------------------------------------------
step "pytest tests/interop"
pytest_status=0
HUBCAP_EMULATOR_BIN=$emulator_bin HUBCAP_BIN=$hubcap_bin AZURITE_BIN=$azurite_bin PYTHONDONTWRITEBYTECODE=1 \
  "$venv/bin/python" -m pytest tests/interop -v ${pytest_args[@]+"${pytest_args[@]}"} || pytest_status=$?
case $pytest_status in
  0) pytest_result=passed ;;
  5) pytest_result="FAILED (pytest collected no tests)" ;;
  *) pytest_result="FAILED (exit $pytest_status)" ;;
esac

# --- summary -------------------------------------------------------------------------------------
overall=OK
case "$cargo_result" in FAILED*) overall=FAILED ;; esac
case "$pytest_result" in FAILED*) overall=FAILED ;; esac
printf '\ntest.sh: %s (cargo build: ok; cargo test: %s; pytest tests/interop: %s)\n' \
  "$overall" "$cargo_result" "$pytest_result"
[ "$overall" = OK ]
