#!/usr/bin/env bash
# Fuzzes hubcap with cargo-fuzz (libFuzzer), one target at a time, at the lowest CPU priority:
# the config reader, connection strings, the path format, the emulator's SAS/JWT verifier, the
# inbound AMQP byte stream (frame guard + fe2o3's decoders), whole client connections to the
# emulator, and one message from transfer bytes to every archive format and back
# (fuzz/fuzz_targets/*.rs say what each checks besides "no panic").
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  how long each target runs (default 600)
#   TARGET              config, connection_strings, path_format, sas_token, amqp_frames,
#                       event_message, emulator_connection (default: all)
#
# Corpora grow in fuzz/corpus/<target> and findings land in fuzz/artifacts/<target> (both
# ignored by git); fuzz/seeds/<target> and fuzz/dicts/<target>.dict are the committed starting
# points. Prints each target's executions and final coverage (libFuzzer's cov:/ft:), and exits
# 1 if any target found a crash, a hang or an out-of-memory input.
#
# Environment: FUZZ_SANITIZER (default none: every target is safe Rust; set "address" for
# ASan, about half the executions per second and a longer build).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

seconds=${1:-600}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi
if (($# > 0)); then
    shift
fi
all_targets=(config connection_strings path_format sas_token amqp_frames event_message
    emulator_connection)
if (($# > 0)); then
    targets=("$@")
else
    targets=("${all_targets[@]}")
fi
for target in "${targets[@]}"; do
    if [[ ! -f fuzz/fuzz_targets/$target.rs ]]; then
        echo "unknown target '$target'; targets: ${all_targets[*]}" >&2
        exit 2
    fi
done
sanitizer=${FUZZ_SANITIZER:-none}

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# Two builds. The parser targets run with debug assertions and overflow checks, which catch
# arithmetic mistakes in hubcap's own code. The AMQP targets run as the shipped release build
# does: serde_amqp 0.18.0 subtracts a size's offset without checking (de.rs, list8/map8/array
# headers), which panics under overflow checks on a 4-byte input, while in release the wrapped
# size is never used (tests/fuzz_regressions.rs shows those inputs are refused cleanly, and the
# root Cargo.toml turns the checks off for serde_amqp in debug builds to match).
amqp_targets=" amqp_frames event_message emulator_connection "
checked_dir=$root/fuzz/target/checked
release_dir=$root/fuzz/target/release-semantics
echo "== building the fuzz targets (sanitizer: $sanitizer)"
(cd fuzz && nice -n 19 cargo +nightly fuzz build --sanitizer "$sanitizer" --debug-assertions \
    --target-dir "$checked_dir")
(cd fuzz && nice -n 19 cargo +nightly fuzz build --sanitizer "$sanitizer" --release \
    --target-dir "$release_dir")
bin_of() {
    if [[ $amqp_targets == *" $1 "* ]]; then
        echo "$release_dir/x86_64-unknown-linux-gnu/release/$1"
    else
        echo "$checked_dir/x86_64-unknown-linux-gnu/release/$1"
    fi
}

# The value of libFuzzer's `name: value` field in the last status line (`#N ... cov: C ft: F`).
last_stat() {
    grep -E '^#[0-9]+' "$2" | tail -n 1 | grep -oE "$1: [0-9]+" | grep -oE '[0-9]+$' || echo '?'
}

found=()
summary=()
for target in "${targets[@]}"; do
    corpus=$root/fuzz/corpus/$target
    artifacts=$root/fuzz/artifacts/$target
    mkdir -p "$corpus" "$artifacts"
    # Read-only seed directories: libFuzzer adds new inputs only to the first (the corpus).
    seeds=()
    [[ -d fuzz/seeds/$target ]] && seeds+=("$root/fuzz/seeds/$target")
    if [[ $target == config ]]; then
        # Every documented and every known-invalid config is a starting point.
        cp -n config.example.toml "$corpus/config.example.toml"
        seeds+=("$root/tests/config_corpus")
    fi
    options=(
        -max_total_time="$seconds"
        # One fuzzing process (the machine is shared); libFuzzer then writes its log to
        # fuzz-0.log in the working directory, which is the artifacts directory below.
        -jobs=1 -workers=1
        # An input taking 10 s is a hang, not a slow parse.
        -timeout=10
        -artifact_prefix="$artifacts/"
        -print_final_stats=1
    )
    [[ -f fuzz/dicts/$target.dict ]] && options+=(-dict="$root/fuzz/dicts/$target.dict")

    echo "== fuzzing $target for ${seconds}s"
    before=$(find "$artifacts" -maxdepth 1 -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' \
        -o -name 'leak-*' | wc -l)
    status=0
    (cd "$artifacts" && nice -n 19 "$(bin_of "$target")" "${options[@]}" "$corpus" "${seeds[@]}") \
        >"$artifacts/run.log" 2>&1 || status=$?
    after=$(find "$artifacts" -maxdepth 1 -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' \
        -o -name 'leak-*' | wc -l)

    log=$artifacts/fuzz-0.log
    executions=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' ||
        echo '?')
    line="$target: ${seconds}s, $executions executions, cov: $(last_stat cov "$log")"
    line+=" ft: $(last_stat ft "$log"), corpus: $(find "$corpus" -type f | wc -l) inputs"
    if ((status != 0 || after > before)); then
        line+=" -- FOUND A PROBLEM (exit $status), see $artifacts"
        found+=("$target")
        grep -E -m 5 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" || true
    fi
    echo "$line"
    summary+=("$line")
done

echo "== summary"
printf '%s\n' "${summary[@]}"
if ((${#found[@]} > 0)); then
    echo "problems found by: ${found[*]} (reproduce: run the target's binary, fuzz/target/*/x86_64-unknown-linux-gnu/release/<target>, on the artifact)" >&2
    exit 1
fi
