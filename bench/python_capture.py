"""Drain-benchmark contestant "Python SDK + fastavro": what a team would write on the official
Python SDK to do hubcap's job.

`EventHubConsumerClient.receive_batch` (pure-Python AMQP stack of azure-eventhub 5.x) with a
`BlobCheckpointStore` (Azurite in the benchmark) and the greedy load-balancing strategy, so one
process owns every partition at once. Per partition it keeps a window like hubcap's: events are
appended as Capture `EventData` records (same schema, same field mapping, ~1 MiB Avro blocks) to
a staging file with fastavro; the window closes when its first event is `--max-window` seconds
old or it holds `--max-window-bytes` of Avro, and then is committed (flush, fsync, rename into
place, directory fsync) and only then checkpointed (`update_checkpoint` of its last event).

It exits by itself once every partition has checkpointed `--events-per-partition` events (the
benchmark preloads the partitions, so their last sequence number is N-1), printing one JSON line
`{"events", "body_bytes", "files", "elapsed_s"}`.

    python bench/python_capture.py --connection-string "Endpoint=sb://127.0.0.1:5672;...;UseDevelopmentEmulator=true" \
        --hub bench-py --consumer-group python --storage-connection-string "..." --container c1 \
        --out /tmp/capture --partitions 4 --events-per-partition 5000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

from azure.eventhub import EventHubConsumerClient
from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore
from fastavro import parse_schema
from fastavro.write import Writer

# The schema Event Hubs Capture writes (tests/fixtures/capture-archive-2016.avro).
CAPTURE_SCHEMA = parse_schema(
    {
        "type": "record",
        "name": "EventData",
        "namespace": "Microsoft.ServiceBus.Messaging",
        "fields": [
            {"name": "SequenceNumber", "type": "long"},
            {"name": "Offset", "type": "string"},
            {"name": "EnqueuedTimeUtc", "type": "string"},
            {"name": "SystemProperties", "type": {"type": "map", "values": ["long", "double", "string", "bytes"]}},
            {"name": "Properties", "type": {"type": "map", "values": ["long", "double", "string", "bytes"]}},
            {"name": "Body", "type": ["null", "bytes"]},
        ],
    }
)
AVRO_BLOCK_BYTES = 1024 * 1024
STAGING_DIR = ".staging"


def capture_time(moment: dt.datetime) -> str:
    """`EnqueuedTimeUtc` as Capture writes it: .NET's `M/d/yyyy h:mm:ss tt`, UTC."""
    moment = moment.astimezone(dt.timezone.utc)
    hour = moment.hour % 12 or 12
    ampm = "AM" if moment.hour < 12 else "PM"
    return f"{moment.month}/{moment.day}/{moment.year} {hour}:{moment.minute:02d}:{moment.second:02d} {ampm}"


def property_value(value):
    if isinstance(value, (bool,)):
        return int(value)
    if isinstance(value, (int, float, str, bytes)):
        return value
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    return str(value)


def record_of(event) -> dict:
    enqueued: dt.datetime = event.enqueued_time
    system = {
        "x-opt-sequence-number": event.sequence_number,
        "x-opt-offset": str(event.offset),
        "x-opt-enqueued-time": int(enqueued.timestamp() * 1000),
    }
    if event.partition_key is not None:
        key = event.partition_key
        system["x-opt-partition-key"] = key.decode() if isinstance(key, bytes) else str(key)
    properties = {}
    for key, value in (event.properties or {}).items():
        properties[key.decode() if isinstance(key, bytes) else str(key)] = property_value(value)
    return {
        "SequenceNumber": event.sequence_number,
        "Offset": str(event.offset),
        "EnqueuedTimeUtc": capture_time(enqueued),
        "SystemProperties": system,
        "Properties": properties,
        "Body": b"".join(event.body),
    }


class Window:
    """One partition's open window: a staging file with a fastavro writer."""

    def __init__(self, out: Path, partition_id: str, codec: str) -> None:
        self.started = time.time()
        self.partition_id = partition_id
        self.staging = out / STAGING_DIR / f"p{partition_id}-{uuid.uuid4().hex}.avro"
        self.file = open(self.staging, "wb")
        self.writer = Writer(self.file, CAPTURE_SCHEMA, codec=codec, sync_interval=AVRO_BLOCK_BYTES)
        self.body_bytes = 0
        self.events = 0
        self.last_event = None

    def append(self, event, record: dict) -> None:
        self.writer.write(record)
        self.body_bytes += len(record["Body"])
        self.events += 1
        self.last_event = event

    def size(self) -> int:
        """Bytes in the window, counted as body bytes (Avro framing adds a little)."""
        return self.body_bytes

    def commit(self, out: Path) -> Path:
        self.writer.flush()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        start = dt.datetime.fromtimestamp(self.started, dt.timezone.utc)
        directory = out / self.partition_id / start.strftime("%Y/%m/%d/%H/%M")
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / f"{start.strftime('%S')}-{uuid.uuid4().hex[:8]}.avro"
        os.rename(self.staging, final)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connection-string", required=True)
    parser.add_argument("--hub", required=True)
    parser.add_argument("--consumer-group", default="$Default")
    parser.add_argument("--storage-connection-string", required=True)
    parser.add_argument("--container", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--events-per-partition", type=int, required=True)
    parser.add_argument("--codec", default="null", choices=["null", "deflate", "zstandard"])
    parser.add_argument("--max-window", type=float, default=1.0, help="seconds")
    parser.add_argument("--max-window-bytes", type=int, default=300 * 1024 * 1024)
    parser.add_argument("--prefetch", type=int, default=300)
    parser.add_argument("--max-batch-size", type=int, default=300)
    parser.add_argument("--verbose", action="store_true", help="print each commit to stderr")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    started = time.monotonic()
    out: Path = args.out
    (out / STAGING_DIR).mkdir(parents=True, exist_ok=True)
    from azure.storage.blob import ContainerClient

    container = ContainerClient.from_connection_string(args.storage_connection_string, args.container)
    if not container.exists():
        container.create_container()
    store = BlobCheckpointStore.from_connection_string(args.storage_connection_string, args.container)
    client = EventHubConsumerClient.from_connection_string(
        args.connection_string,
        consumer_group=args.consumer_group,
        eventhub_name=args.hub,
        checkpoint_store=store,
        load_balancing_strategy="greedy",
        load_balancing_interval=2,
    )

    last_sequence = args.events_per_partition - 1
    lock = threading.Lock()
    windows: dict[str, Window] = {}
    checkpointed: dict[str, int] = {}
    totals = {"events": 0, "body_bytes": 0, "files": 0}
    done = threading.Event()

    def close_window(partition_context, window: Window) -> None:
        window.commit(out)
        partition_context.update_checkpoint(window.last_event)
        if args.verbose:
            print(f"{time.monotonic() - started:7.2f} s: partition {partition_context.partition_id} committed "
                  f"{window.events} events up to {window.last_event.sequence_number}", file=sys.stderr, flush=True)
        with lock:
            totals["events"] += window.events
            totals["body_bytes"] += window.body_bytes
            totals["files"] += 1
            checkpointed[partition_context.partition_id] = window.last_event.sequence_number
            if len(checkpointed) >= args.partitions and all(
                seq >= last_sequence for seq in checkpointed.values()
            ):
                done.set()

    def on_event_batch(partition_context, events) -> None:
        pid = partition_context.partition_id
        window: Optional[Window] = windows.get(pid)
        for event in events:
            if window is None:
                window = windows[pid] = Window(out, pid, args.codec)
            window.append(event, record_of(event))
        if window is None:
            return
        age = time.time() - window.started
        if age >= args.max_window or window.size() >= args.max_window_bytes:
            del windows[pid]
            close_window(partition_context, window)

    def stop_when_done() -> None:
        done.wait()
        client.close()

    threading.Thread(target=stop_when_done, daemon=True).start()
    with client:
        client.receive_batch(
            on_event_batch=on_event_batch,
            max_batch_size=args.max_batch_size,
            max_wait_time=0.5,
            prefetch=args.prefetch,
            starting_position="-1",
        )
    print(json.dumps({**totals, "elapsed_s": time.monotonic() - started}), flush=True)


if __name__ == "__main__":
    main()
