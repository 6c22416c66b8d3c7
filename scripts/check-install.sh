#!/usr/bin/env bash
# Checks the README's install command on this machine, as a new user would run it:
#
#   bash scripts/check-install.sh            install into a scratch directory, check, remove it
#   bash scripts/check-install.sh --keep     keep the scratch directory (build files included)
#   bash scripts/check-install.sh --target-dir DIR   reuse build files of an earlier --keep run
#
# It takes the `cargo install` line from README.md's Install section, runs it with `--root` in a
# scratch directory (so ~/.cargo/bin is left alone) and a fresh target directory (a first build,
# timed), then checks the installed binary: --version, completions, the man page, its size, and
# a short `hubcap demo` whose files `hubcap cat` prints. Not part of scripts/test.sh: it is a
# full release build from nothing.
set -euo pipefail

keep=false
target_dir=
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=true ;;
    --target-dir) shift; target_dir=${1:?--target-dir needs a directory} ;;
    -h | --help) sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) printf 'check-install.sh: unknown argument: %s\n' "$1" >&2; exit 2 ;;
  esac
  shift
done

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
fail() { printf 'check-install.sh: FAILED: %s\n' "$*" >&2; exit 1; }

# The command exactly as documented (the first `cargo install` line of a README code block).
documented=$(grep -m1 -E '^cargo install ' README.md | sed 's/[[:space:]]*#.*$//') \
  || fail "README.md has no 'cargo install' line"
case "$documented" in
  *--locked*) ;;
  *) fail "the documented install command does not use --locked: $documented" ;;
esac
printf '==> documented: %s\n' "$documented"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/hubcap-install.XXXXXX")
cleanup() {
  if [ "$keep" = true ]; then printf '==> kept %s\n' "$scratch"; else rm -rf "$scratch"; fi
}
trap cleanup EXIT

target_dir=${target_dir:-$scratch/target}
started=$(date +%s)
# shellcheck disable=SC2086 # the documented command is split into words on purpose
CARGO_TARGET_DIR=$target_dir $documented --root "$scratch/root" \
  || fail "the documented install command failed"
elapsed=$(( $(date +%s) - started ))
bin=$scratch/root/bin/hubcap
[ -x "$bin" ] || fail "no $bin after the install"

size=$(stat -c %s "$bin")
printf '==> build and install: %d min %02d s; binary %d MB; build files %s\n' \
  $((elapsed / 60)) $((elapsed % 60)) $((size / 1000000)) "$(du -sh "$target_dir" | cut -f1)"
[ "$size" -lt 50000000 ] || fail "the binary is $((size / 1000000)) MB: is the release profile keeping debug info?"

# Each output is captured whole before it is matched: `grep -q` on a pipe would stop reading early.
expect() { # expect WHAT PATTERN COMMAND...
  local what=$1 pattern=$2 output
  shift 2
  output=$("$@") || fail "$what exited with $?"
  grep -q -- "$pattern" <<<"$output" || fail "$what: no '$pattern' in its output"
}
expect "hubcap --version" '^hubcap ' "$bin" --version
expect "hubcap completions bash" '_hubcap' "$bin" completions bash
expect "hubcap completions zsh" '#compdef hubcap' "$bin" completions zsh
expect "hubcap completions fish" 'complete -c hubcap' "$bin" completions fish
expect "hubcap man" '^\.TH hubcap' "$bin" man
expect "hubcap run --help" 'config.example.toml' "$bin" run --help

demo=$scratch/demo
"$bin" demo --duration 4 --window 1 --rate 200 --dir "$demo" >"$scratch/demo.out" \
  || fail "hubcap demo: $(cat "$scratch/demo.out")"
file=$(sed -n 's/^ *hubcap cat --limit 5 //p' "$scratch/demo.out")
[ -n "$file" ] || fail "the demo printed no hubcap cat hint: $(cat "$scratch/demo.out")"
lines=$("$bin" cat --limit 5 "$file" | wc -l)
[ "$lines" -ge 1 ] || fail "hubcap cat printed nothing for $file"

printf '==> check-install.sh: OK (%s)\n' "$("$bin" --version)"
