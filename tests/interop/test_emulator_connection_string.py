"""The connection string hubcap-emulator prints is ready to paste: `hubcap send` and the official
Python SDK connect with it exactly as printed, and `--help` shows the same string for the
default address and key. `hubcap send` names the valid partitions when asked for one that does
not exist, and says nothing but its summary on success."""

from __future__ import annotations

import re
import subprocess
import threading
import time

import pytest
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient

from conftest import emulator_binary, hubcap_binary
from hubcap_process import hubcap_is_built

pytestmark = pytest.mark.skipif(
    not (hubcap_is_built() and emulator_binary().is_file()),
    reason=f"{hubcap_binary()} or {emulator_binary()} is not built: run `bash scripts/test.sh`",
)

DEFAULT_KEY_NAME = "RootManageSharedAccessKey"
DEFAULT_KEY = "SAS_KEY_VALUE"


def printed_connection_string(emulator, hub: str, timeout: float = 10.0) -> str:
    """The string the emulator printed on stderr under `event hub "<hub>"`."""
    deadline = time.monotonic() + timeout
    pattern = re.compile(rf'^event hub "{re.escape(hub)}", connection string:\n  (\S+)$', re.M)
    while True:
        match = pattern.search(emulator.stderr_path.read_text(errors="replace"))
        if match:
            return match.group(1)
        if time.monotonic() > deadline:
            pytest.fail(f"no connection string for {hub} on stderr:\n{emulator.stderr_path.read_text()}")
        time.sleep(0.05)


def hubcap_send(tmp_path, connection_string: str, lines: list[str], *args: str) -> subprocess.CompletedProcess:
    config = tmp_path / "send.toml"
    # The printed string carries EntityPath: no `name` key is needed.
    config.write_text(
        f'[eventhub]\nconnection_string = "{connection_string}"\n\n'
        f'[checkpoint_store]\ntype = "file"\npath = "{tmp_path / "checkpoints"}"\n\n'
        '[sink]\ntype = "stdout"\n\n[http]\nlisten = "off"\n'
    )
    return subprocess.run(
        [str(hubcap_binary()), "send", "--config", str(config), *args],
        input="".join(f"{line}\n" for line in lines).encode(),
        capture_output=True,
        timeout=60,
    )


def last_sequence_number(connection_string: str, partition: str) -> int:
    client = EventHubProducerClient.from_connection_string(connection_string)
    with client:
        return client.get_partition_properties(partition)["last_enqueued_sequence_number"]


def test_the_printed_string_works_for_hubcap_send_and_the_python_sdk(start_emulator, tmp_path):
    emulator = start_emulator(hubs={"telemetry": 4}, sas_key_name=DEFAULT_KEY_NAME, sas_key=DEFAULT_KEY)
    printed = printed_connection_string(emulator, "telemetry")

    # --help shows the same string for the default listen address.
    help_text = subprocess.run([str(emulator_binary()), "--help"], capture_output=True, timeout=30, check=True)
    shown = re.search(r"Endpoint=sb://127\.0\.0\.1:5672/\S+", help_text.stdout.decode()).group(0)
    assert shown == printed.replace(f"127.0.0.1:{emulator.amqp_port}", "127.0.0.1:5672"), help_text.stdout.decode()

    # hubcap send, as printed: quiet apart from the summary.
    sent = hubcap_send(tmp_path, printed, ["a", "b", "c"], "--partition-id", "2")
    stderr = sent.stderr.decode()
    assert sent.returncode == 0, stderr
    assert stderr.strip() == "sent 3 events in 1 batches", stderr
    assert last_sequence_number(printed, "2") == 2

    # The official SDK, as printed: publishes, and reads back what hubcap sent.
    producer = EventHubProducerClient.from_connection_string(printed)
    with producer:
        batch = producer.create_batch(partition_id="2")
        batch.add(EventData("from the sdk"))
        producer.send_batch(batch)
    assert last_sequence_number(printed, "2") == 3

    bodies: list[str] = []
    consumer = EventHubConsumerClient.from_connection_string(printed, consumer_group="$Default")

    def on_event(context, event):
        if event is not None:
            bodies.append(event.body_as_str())

    receiving = threading.Thread(
        target=consumer.receive,
        kwargs={"on_event": on_event, "partition_id": "2", "starting_position": "-1", "max_wait_time": 1},
        daemon=True,
    )
    receiving.start()
    deadline = time.monotonic() + 30
    while len(bodies) < 4 and time.monotonic() < deadline and receiving.is_alive():
        time.sleep(0.05)
    consumer.close()
    receiving.join(timeout=10)
    assert bodies == ["a", "b", "c", "from the sdk"]


def test_send_to_a_partition_that_does_not_exist_lists_the_valid_ones(start_emulator, tmp_path):
    emulator = start_emulator(hubs={"telemetry": 4})
    printed = printed_connection_string(emulator, "telemetry")
    result = hubcap_send(tmp_path, printed, ["x"], "--partition-id", "9")
    stderr = result.stderr.decode()
    assert result.returncode != 0
    assert 'has no partition "9"' in stderr and "0, 1, 2, 3" in stderr, stderr
    assert "NotFound" not in stderr, stderr
    assert last_sequence_number(printed, "0") == -1
