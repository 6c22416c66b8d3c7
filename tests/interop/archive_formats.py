"""The archive formats hubcap writes (Capture Avro, Parquet, JSON Lines), read back by real
readers: fastavro, pyarrow, and Python's json through gzip and zstd.

`ArchiveFormat.events(path)` gives every format's events in one shape (`ArchivedEvent`), so one
test can hold any format to the same contract; `capture_records` gives them in the shape of
Capture's Avro records (SequenceNumber, Properties, Body), so the Avro fault tests run unchanged
over the other formats.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pyarrow as pa
import pyarrow.parquet as pq
from backports import zstd

from hubcap_process import STAGING_DIR, read_avro


@dataclass
class ArchivedEvent:
    partition_id: Optional[str]  # None in Avro (the path says it)
    sequence_number: int
    offset: str
    enqueued_time: dt.datetime  # UTC, millisecond precision
    partition_key: Optional[str]
    properties: dict[str, Any]
    system_properties: dict[str, Any] = field(default_factory=dict)
    body: Optional[bytes] = None


# ---- Parquet, through pyarrow


def property_value_type() -> pa.DataType:
    """A property value, as src/sink/parquet.rs documents it: one member set per entry."""
    return pa.struct(
        [
            ("long", pa.int64()),
            ("double", pa.float64()),
            ("string", pa.string()),
            ("binary", pa.binary()),
            ("boolean", pa.bool_()),
            ("timestamp", pa.timestamp("ms", tz="UTC")),
        ]
    )


def parquet_schema(body_utf8: bool) -> pa.Schema:
    """The exact Arrow schema of hubcap's Parquet files."""
    properties = pa.map_(
        pa.field("key", pa.string(), nullable=False), pa.field("value", property_value_type(), nullable=False)
    )
    fields = [
        pa.field("partition_id", pa.string(), nullable=False),
        pa.field("sequence_number", pa.int64(), nullable=False),
        pa.field("offset", pa.string(), nullable=False),
        pa.field("enqueued_time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("partition_key", pa.string()),
        pa.field("system_properties", properties, nullable=False),
        pa.field("properties", properties, nullable=False),
        pa.field("body", pa.binary()),
    ]
    if body_utf8:
        fields.append(pa.field("body_utf8", pa.string()))
    return pa.schema(fields)


def _member(value: dict) -> Any:
    present = [(name, item) for name, item in value.items() if item is not None]
    assert len(present) == 1, f"a property value must have exactly one member set: {value}"
    return present[0][1]


def read_parquet(path: Path) -> list[ArchivedEvent]:
    table = pq.read_table(path)
    events = []
    for row in table.to_pylist():
        events.append(
            ArchivedEvent(
                partition_id=row["partition_id"],
                sequence_number=row["sequence_number"],
                offset=row["offset"],
                enqueued_time=row["enqueued_time"],
                partition_key=row["partition_key"],
                properties={key: _member(value) for key, value in row["properties"]},
                system_properties={key: _member(value) for key, value in row["system_properties"]},
                body=row["body"],
            )
        )
    return events


# ---- JSON Lines, through json (the stdout sink's encoding, src/sink/stdout.rs)


def json_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"base64"}:
        return base64.b64decode(value["base64"])
    return value


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def json_event(line: dict) -> ArchivedEvent:
    body = line.get("body")
    if body is not None:
        body = base64.b64decode(body) if line.get("body_encoding") == "base64" else body.encode()
    return ArchivedEvent(
        partition_id=line["partition_id"],
        sequence_number=line["sequence_number"],
        offset=line["offset"],
        enqueued_time=parse_time(line["enqueued_time"]),
        partition_key=line["partition_key"],
        properties={key: json_value(value) for key, value in line["properties"].items()},
        system_properties={key: json_value(value) for key, value in line["system_properties"].items()},
        body=body,
    )


def open_jsonl(path: Path):
    if path.name.endswith(".jsonl.gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if path.name.endswith(".jsonl.zst"):
        return zstd.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_jsonl(path: Path) -> list[ArchivedEvent]:
    """Line by line; a torn last line or a truncated compressed stream raises."""
    events = []
    with open_jsonl(path) as lines:
        for number, line in enumerate(lines, 1):
            assert line.endswith("\n"), f"{path}: line {number} is not terminated (a torn file)"
            events.append(json_event(json.loads(line)))
    return events


# ---- Capture Avro, through fastavro


def read_capture(path: Path) -> list[ArchivedEvent]:
    events = []
    for record in read_avro(path).records:
        system = dict(record["SystemProperties"])
        events.append(
            ArchivedEvent(
                partition_id=None,
                sequence_number=record["SequenceNumber"],
                offset=record["Offset"],
                enqueued_time=dt.datetime.fromtimestamp(system.pop("x-opt-enqueued-time") / 1000, dt.timezone.utc),
                partition_key=system.pop("x-opt-partition-key", None),
                properties=record["Properties"],
                system_properties=system,
                body=record["Body"],
            )
        )
    return events


@dataclass(frozen=True)
class ArchiveFormat:
    id: str
    sink: dict  # the [sink] keys that choose it
    extension: str
    events: Callable[[Path], list[ArchivedEvent]]

    def committed(self, root: Path) -> list[Path]:
        """Every committed file of this format under `root` (never one being written)."""
        if not root.is_dir():
            return []
        return sorted(
            path
            for path in root.rglob("*" + self.extension)
            if path.is_file() and STAGING_DIR not in path.relative_to(root).parts
        )

    def capture_records(self, path: Path) -> list[dict]:
        """The events of `path` in the shape of Capture's Avro records (raises if it is torn)."""
        if self.id == "avro":
            return read_avro(path).records
        return [
            {"SequenceNumber": event.sequence_number, "Properties": event.properties, "Body": event.body}
            for event in self.events(path)
        ]


AVRO = ArchiveFormat("avro", {}, ".avro", read_capture)
PARQUET = ArchiveFormat("parquet", {"format": "parquet"}, ".parquet", read_parquet)
PARQUET_UTF8 = ArchiveFormat("parquet-utf8", {"format": "parquet", "body": "utf8"}, ".parquet", read_parquet)
JSONL = ArchiveFormat("jsonl", {"format": "jsonl"}, ".jsonl", read_jsonl)
JSONL_GZIP = ArchiveFormat("jsonl-gzip", {"format": "jsonl", "codec": "gzip"}, ".jsonl.gz", read_jsonl)
JSONL_ZSTD = ArchiveFormat("jsonl-zstd", {"format": "jsonl", "codec": "zstd"}, ".jsonl.zst", read_jsonl)
