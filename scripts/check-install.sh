#!/usr/bin/env bash
# Checks the README's install command on this machine, as a new user would run it:
#
#   bash scripts/check-install.sh            install into a scratch directory, check, remove it
#   bash scripts/check-install.sh --keep     keep the scratch directory (build files included)
#
# It takes the `cargo install` line from README.md's Install section, runs it with `--root` in a
# scratch directory (so ~/.cargo/bin is left alone) and a fresh target directory (a first build,
# timed), then checks the installed binary: --version, completions, the man page, its size, and
# a short `hubcap demo` whose files `hubcap cat` prints. Not part of scripts/test.sh: it is a
# full release build from nothing.
set -euo pipefail

keep=false
case "${1:-}" in
  --keep) keep=true ;;
  "") ;;
  -h | --help) sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) printf 'check-install.sh: unknown argument: %s\n' "$1" >&2; exit 2 ;;
esac

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

started=$(date +%s)
# shellcheck disable=SC2086 # the documented command is split into words on purpose
CARGO_TARGET_DIR=$scratch/target $documented --root "$scratch/root" \
  || fail "the documented install command failed"
elapsed=$(( $(date +%s) - started ))
bin=$scratch/root/bin/hubcap
[ -x "$bin" ] || fail "no $bin after the install"

size=$(stat -c %s "$bin")
printf '==> first build and install: %d min %02d s; binary %d MB; build files %s\n' \
  $((elapsed / 60)) $((elapsed % 60)) $((size / 1000000)) "$(du -sh "$scratch/target" | cut -f1)"
[ "$size" -lt 50000000 ] || fail "the binary is $((size / 1000000)) MB: is the release profile keeping debug info?"

"$bin" --version | grep -q '^hubcap ' || fail "hubcap --version"
"$bin" completions bash | grep -q 'hubcap' || fail "hubcap completions bash"
"$bin" completions zsh | grep -q '#compdef hubcap' || fail "hubcap completions zsh"
"$bin" completions fish | grep -q 'complete -c hubcap' || fail "hubcap completions fish"
"$bin" man | grep -q '^\.TH hubcap' || fail "hubcap man"
"$bin" run --help | grep -q 'config.example.toml' || fail "run --help does not point to config.example.toml"

demo=$scratch/demo
"$bin" demo --duration 4 --window 1 --rate 200 --dir "$demo" >"$scratch/demo.out" \
  || fail "hubcap demo: $(cat "$scratch/demo.out")"
file=$(sed -n 's/^ *hubcap cat --limit 5 //p' "$scratch/demo.out")
[ -n "$file" ] || fail "the demo printed no hubcap cat hint: $(cat "$scratch/demo.out")"
lines=$("$bin" cat --limit 5 "$file" | wc -l)
[ "$lines" -ge 1 ] || fail "hubcap cat printed nothing for $file"

printf '==> check-install.sh: OK (%s)\n' "$("$bin" --version)"
