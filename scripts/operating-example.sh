#!/usr/bin/env bash
# Runs the README's "Operating" walk-through on this machine and prints every command with its
# output, as the README shows them: the emulator with a 4-partition hub that already holds a
# backlog, a fleet of three hubcap instances started after it (so the backlog is "before the
# archiver existed"), then `hubcap status`, `hubcap checkpoints`, `hubcap backfill` of the
# backlog and `hubcap verify` of the result; then the fleet stops while events keep arriving.
#
#   bash scripts/operating-example.sh        (builds nothing: uses target/debug, or BIN_DIR)
#
# Only loopback addresses; every process it starts is stopped by PID on exit.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin_dir=${BIN_DIR:-$repo_root/target/debug}
for binary in hubcap hubcap-emulator; do
  [ -x "$bin_dir/$binary" ] || { echo "operating-example.sh: $bin_dir/$binary is missing: cargo build --workspace" >&2; exit 1; }
done
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${KEEP_WORK:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
cd "$work"

# Shown as `$ hubcap ...` with the output; runs from the work directory.
show() {
  printf '$ hubcap %s\n' "$*"
  "$bin_dir/hubcap" "$@" 2>&1 | sed "s|$work/||g" || true
  echo
}
# Waits (60 s at most) until a `hubcap status --json` document satisfies a Python expression
# over `s`.
wait_status() {
  local expression=$1 deadline=$((SECONDS + 60))
  until "$bin_dir/hubcap" status --config hubcap.toml --json 2>/dev/null \
      | python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if ($expression) else 1)"; do
    [ $SECONDS -lt $deadline ] || { echo "operating-example.sh: timed out waiting for: $expression" >&2; exit 1; }
    sleep 0.5
  done
}
preload() {
  curl -sf -XPOST "http://$admin/preload" -H 'content-type: application/json' \
    -d "{\"hub\":\"telemetry\",\"events_per_partition\":$1,\"size\":256}" >/dev/null
}

"$bin_dir/hubcap-emulator" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --hub telemetry:4 \
  --consumer-group operators --sas-key example-key >emulator.out 2>emulator.log &
pids+=($!)
deadline=$((SECONDS + 10))
until grep -q amqp_addr emulator.out 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || { echo "operating-example.sh: the emulator did not start" >&2; cat emulator.log >&2; exit 1; }
  sleep 0.1
done
amqp=$(python3 -c "import json; print(json.loads(open('emulator.out').readline())['amqp_addr'])")
admin=$(python3 -c "import json; print(json.loads(open('emulator.out').readline())['admin_addr'])")

# The past: 1,000 events per partition before any archiver runs. The fleet starts at the
# first event enqueued after them, whenever its receivers attach.
preload 1000
sleep 0.05
present=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)

write_config() {
  cat >"$1" <<TOML
[eventhub]
connection_string = "Endpoint=sb://$amqp/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=example-key;UseDevelopmentEmulator=true;EntityPath=telemetry"
start_position = "time:$present"
[checkpoint_store]
type = "file"
path = "$work/checkpoints"
[load_balancing]
update_interval = "2s"
ownership_expiration = "10s"
${2:+owner_id = \"$2\"}
[sink]
type = "avro_file"
path = "$work/capture"
max_window = "5s"
[http]
listen = "off"
[log]
level = "warn"
TOML
}
write_config hubcap.toml
fleet=()
for host in host-1 host-2 host-3; do
  write_config "$host.toml" "$host"
  "$bin_dir/hubcap" run --config "$host.toml" 2>"$host.log" &
  pids+=($!)
  fleet+=($!)
done
wait_status "len(s['owners']) == 3 and all(p['ownership'] == 'active' for p in s['partitions'])"
# The present: 300 events per partition the fleet archives.
preload 300
wait_status "all(p['lag_events'] == 0 and (p['checkpoint'] or {}).get('sequence_number') == 1299 for p in s['partitions'])"

show status --config hubcap.toml
show checkpoints list --config hubcap.toml
show checkpoints set --config hubcap.toml --partition 0 --to seq:1200 --dry-run --lookup-consumer-group operators
show backfill --config hubcap.toml --from earliest --consumer-group operators
show verify --config hubcap.toml

# The fleet stops (SIGTERM: it commits, checkpoints and releases) while 250 more events per
# partition arrive: a backlog, no owner.
kill -TERM "${fleet[@]}"
for pid in "${fleet[@]}"; do wait "$pid" || true; done
preload 250
show status --config hubcap.toml
show checkpoints set --config hubcap.toml --partition 0 --to seq:1200 --dry-run
show checkpoints export --config hubcap.toml
