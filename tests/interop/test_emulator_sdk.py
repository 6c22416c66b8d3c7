"""hubcap-emulator driven by the unmodified official Python SDK (azure-eventhub 5.15.1, sync clients).

Each test is a scenario a real client goes through. The SDK's own retries stay on (pyamqp fails
about one connect in ten on this kernel with EINVAL from its own setsockopt), so every expectation
is checked against a deadline rather than on the first try.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import socket
import threading
import time
import uuid
from typing import Any, Callable, Iterable, Iterator, Optional

import pytest
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.eventhub.exceptions import (
    AuthenticationError,
    ConnectError,
    EventHubError,
    OwnershipLostError,
)

from conftest import Emulator, emulator_binary, random_sas_key, wait_until

pytestmark = pytest.mark.skipif(
    not emulator_binary().is_file(),
    reason=(
        f"hubcap-emulator is not built at {emulator_binary()}: run `bash scripts/test.sh` "
        "(or `cargo build -p hubcap-emulator` and set HUBCAP_EMULATOR_BIN)"
    ),
)

# The SDK default is 3 retries with a 0.8 s backoff factor (the n-th retry waits factor * 2**n s,
# n from 1). Calls that should work get 5 retries, as pyamqp's EINVAL can hit a few in a row; calls
# that should fail get the default 3, enough to show the error is final, not a transient.
SDK_RETRY_OPTIONS = {"retry_total": 5, "retry_backoff_factor": 0.3}
FAILING_CALL_RETRY_OPTIONS = {"retry_total": 3}
RECEIVE_TIMEOUT_S = 60.0
ERROR_DEADLINE_S = 30.0
HUB1_PARTITIONS = ["0", "1", "2", "3"]


# --------------------------------------------------------------------------------------------
# clients


def producer_client(emulator: Emulator, hub: str = "hub1", key: Optional[str] = None, **options: Any):
    return EventHubProducerClient.from_connection_string(
        emulator.connection_string(key=key), eventhub_name=hub, **{**SDK_RETRY_OPTIONS, **options}
    )


def consumer_client(
    emulator: Emulator,
    hub: str = "hub1",
    consumer_group: str = "$Default",
    key: Optional[str] = None,
    **options: Any,
):
    return EventHubConsumerClient.from_connection_string(
        emulator.connection_string(key=key),
        consumer_group=consumer_group,
        eventhub_name=hub,
        **{**SDK_RETRY_OPTIONS, **options},
    )


def partition_properties(emulator: Emulator, partition_id: str, hub: str = "hub1") -> dict:
    with consumer_client(emulator, hub) as client:
        return client.get_partition_properties(partition_id)


def all_partition_properties(emulator: Emulator, hub: str = "hub1") -> dict[str, dict]:
    with consumer_client(emulator, hub) as client:
        return {pid: client.get_partition_properties(pid) for pid in client.get_partition_ids()}


# --------------------------------------------------------------------------------------------
# sending


def numbered_bodies(prefix: str, count: int) -> list[bytes]:
    return [f"{prefix}-{i}".encode() for i in range(count)]


def send_events(
    emulator: Emulator,
    bodies: Iterable[bytes],
    *,
    hub: str = "hub1",
    partition_id: Optional[str] = None,
    partition_key: Optional[str] = None,
    properties: Optional[dict] = None,
    producer: Optional[EventHubProducerClient] = None,
) -> None:
    """Sends `bodies` as one batch (message format 0x80013700)."""
    events = []
    for body in bodies:
        event = EventData(body)
        if properties is not None:
            event.properties = dict(properties)
        events.append(event)
    options = {}
    if partition_id is not None:
        options["partition_id"] = partition_id
    if partition_key is not None:
        options["partition_key"] = partition_key
    if producer is not None:
        producer.send_batch(events, **options)
        return
    with producer_client(emulator, hub) as own_producer:
        own_producer.send_batch(events, **options)


# --------------------------------------------------------------------------------------------
# receiving


def body_bytes(event: EventData) -> bytes:
    return b"".join(event.body)


def sequence_numbers(events: Iterable[EventData]) -> list[int]:
    return [event.sequence_number for event in events]


class Reception:
    """EventHubConsumerClient.receive running in its own thread, and everything it has seen."""

    _names = itertools.count()

    def __init__(
        self, client: EventHubConsumerClient, receive_options: dict, checkpoint_every_event: bool = False
    ) -> None:
        self.client = client
        self.checkpoint_every_event = checkpoint_every_event
        self.thread_name = f"reception-{next(self._names)}"
        self._lock = threading.Lock()
        self._events: list[tuple[str, EventData]] = []
        self._errors: list[tuple[Optional[str], Exception]] = []
        self._receive_failure: Optional[BaseException] = None
        self._thread = threading.Thread(
            target=self._run, args=(receive_options,), name=self.thread_name, daemon=True
        )

    def _run(self, receive_options: dict) -> None:
        try:
            self.client.receive(on_event=self._on_event, on_error=self._on_error, **receive_options)
        except BaseException as err:  # surfaced by wait_for
            self._receive_failure = err

    def _on_event(self, context, event: Optional[EventData]) -> None:
        if event is not None:
            if self.checkpoint_every_event:
                context.update_checkpoint(event)
            with self._lock:
                self._events.append((context.partition_id, event))

    def _on_error(self, context, error: Exception) -> None:
        with self._lock:
            self._errors.append((context.partition_id if context else None, error))

    def start(self) -> "Reception":
        self._thread.start()
        return self

    def close(self) -> None:
        self.client.close()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "EventHubConsumerClient.receive did not return after close()"

    def events(self, partition_id: Optional[str] = None) -> list[EventData]:
        with self._lock:
            return [e for pid, e in self._events if partition_id is None or pid == partition_id]

    def events_by_partition(self) -> dict[str, list[EventData]]:
        grouped: dict[str, list[EventData]] = {}
        with self._lock:
            for pid, event in self._events:
                grouped.setdefault(pid, []).append(event)
        return grouped

    def errors(self) -> list[Exception]:
        with self._lock:
            return [error for _, error in self._errors]

    def summary(self) -> str:
        seen = {pid: sequence_numbers(events) for pid, events in sorted(self.events_by_partition().items())}
        return f"received sequence numbers per partition: {seen}; errors: {self.errors()!r}"

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = RECEIVE_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self._receive_failure is not None:
                raise AssertionError(f"receive() raised {self._receive_failure!r} while waiting for {what}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; {self.summary()}")
            time.sleep(0.05)

    def wait_for_count(self, count: int, partition_id: Optional[str] = None) -> None:
        where = f"partition {partition_id}" if partition_id is not None else "all partitions"
        self.wait_for(lambda: len(self.events(partition_id)) >= count, f"{count} events from {where}")

    def wait_for_sequence_number(self, partition_id: str, sequence_number: int) -> None:
        self.wait_for(
            lambda: any(e.sequence_number == sequence_number for e in self.events(partition_id)),
            f"sequence number {sequence_number} from partition {partition_id}",
        )


@contextlib.contextmanager
def receiving(
    emulator: Emulator,
    *,
    hub: str = "hub1",
    consumer_group: str = "$Default",
    client_options: Optional[dict] = None,
    checkpoint_every_event: bool = False,
    **receive_options: Any,
) -> Iterator[Reception]:
    """Receives in the background for the duration of the block (receive_options go to receive())."""
    client = consumer_client(emulator, hub, consumer_group, **(client_options or {}))
    reception = Reception(client, receive_options, checkpoint_every_event).start()
    try:
        yield reception
    finally:
        reception.close()


def receive_through(
    emulator: Emulator,
    partition_id: str,
    last_sequence_number: int,
    starting_position: Any = "-1",
    inclusive: bool = False,
    hub: str = "hub1",
) -> list[EventData]:
    """Everything one partition delivers from `starting_position` up to and including `last_sequence_number`.

    Delivery within a partition is ordered, so once the last event is in, nothing before it is missing.
    """
    with receiving(
        emulator,
        hub=hub,
        partition_id=partition_id,
        starting_position=starting_position,
        starting_position_inclusive=inclusive,
    ) as reception:
        reception.wait_for_sequence_number(partition_id, last_sequence_number)
        return reception.events(partition_id)


# --------------------------------------------------------------------------------------------
# errors and evidence


class BackgroundCall:
    """A blocking SDK call running in its own thread, so that a hang shows up as a failed test."""

    def __init__(self, operation: Callable[[], Any]) -> None:
        self._outcome: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, args=(operation,), daemon=True)
        self._thread.start()

    def _run(self, operation: Callable[[], Any]) -> None:
        try:
            self._outcome["returned"] = operation()
        except BaseException as err:
            self._outcome["raised"] = err

    def outcome(self, within: float) -> tuple[str, Any]:
        """("returned", value) or ("raised", error)."""
        self._thread.join(timeout=within)
        if self._thread.is_alive():
            raise AssertionError(f"the call was still running after {within:.0f} s: a hang, not an error")
        return next(iter(self._outcome.items()))


def error_within(operation: Callable[[], Any], seconds: float = ERROR_DEADLINE_S) -> BaseException:
    kind, value = BackgroundCall(operation).outcome(within=seconds)
    assert kind == "raised", f"expected an error, the call returned {value!r}"
    return value


def error_text(error: BaseException) -> str:
    parts = [type(error).__name__, str(error), str(getattr(error, "error", "") or "")]
    details = getattr(error, "details", None)
    if isinstance(details, BaseException):
        parts += [type(details).__name__, str(details)]
    return " | ".join(parts)


def is_authentication_failure(error: BaseException) -> bool:
    if isinstance(error, AuthenticationError):
        return True
    text = error_text(error).lower()
    return isinstance(error, ConnectError) and any(
        word in text for word in ("unauthorized", "auth-failed", "authentication", "401")
    )


def is_not_found(error: BaseException) -> bool:
    text = error_text(error).lower()
    return any(word in text for word in ("not-found", "not found", "notfound", "404"))


def is_ownership_loss(error: BaseException) -> bool:
    if isinstance(error, OwnershipLostError):
        return True
    text = error_text(error).lower()
    return "stolen" in text or "ownership" in text


class PyamqpStateLog(logging.Handler):
    """What pyamqp did, per thread, read from its "... state changed: OLD -> NEW" log records.

    Evidence the public API does not give: that a fault made a consumer open a new connection, or
    that the server refused a link (the SDK retries a refused receiver link without telling on_error).
    """

    LOGGERS = ("azure.eventhub._pyamqp._connection", "azure.eventhub._pyamqp.link")

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self._counts: dict[tuple[str, str], int] = {}
        self._counts_lock = threading.Lock()
        self._previous_levels: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if not (isinstance(record.msg, str) and "state changed" in record.msg and len(record.args or ()) == 2):
            return
        old, new = (getattr(state, "name", None) for state in record.args)
        if record.msg.startswith("Connection") and old == "START":
            self._count(record.threadName, "connection opened")
        elif record.msg.startswith("Link") and new == "ERROR":
            self._count(record.threadName, "link error")

    def _count(self, thread_name: str, what: str) -> None:
        with self._counts_lock:
            self._counts[(thread_name, what)] = self._counts.get((thread_name, what), 0) + 1

    def connections_opened(self, thread_name: str) -> int:
        with self._counts_lock:
            return self._counts.get((thread_name, "connection opened"), 0)

    def link_errors(self, thread_name: str) -> int:
        with self._counts_lock:
            return self._counts.get((thread_name, "link error"), 0)

    def __enter__(self) -> "PyamqpStateLog":
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            self._previous_levels[name] = logger.level
            logger.setLevel(logging.INFO)
            logger.addHandler(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            logger.removeHandler(self)
            logger.setLevel(self._previous_levels[name])


def amqp_header_answered(emulator: Emulator, timeout: float = 2.0) -> bool:
    """Whether a fresh TCP connection gets the server's SASL protocol header back."""
    try:
        with socket.create_connection((emulator.amqp_host, emulator.amqp_port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"AMQP\x03\x01\x00\x00")
            return sock.recv(8).startswith(b"AMQP")
    except OSError:
        return False


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# --------------------------------------------------------------------------------------------
# management: hub and partition properties


def test_partition_ids_are_those_of_the_hub(emulator):
    with consumer_client(emulator) as client:
        assert client.get_partition_ids() == HUB1_PARTITIONS
    with producer_client(emulator) as producer:
        assert producer.get_partition_ids() == HUB1_PARTITIONS


def test_each_hub_reports_its_own_partitions(start_emulator):
    emulator = start_emulator(hubs={"hub1": 4, "orders": 2, "audit": 1})
    for hub, expected in {"hub1": HUB1_PARTITIONS, "orders": ["0", "1"], "audit": ["0"]}.items():
        with consumer_client(emulator, hub) as client:
            assert client.get_partition_ids() == expected, hub


def test_eventhub_properties_describe_the_hub(emulator):
    with consumer_client(emulator) as client:
        properties = client.get_eventhub_properties()
    assert properties["eventhub_name"] == "hub1"
    assert properties["partition_ids"] == HUB1_PARTITIONS
    created_at = properties["created_at"]
    assert isinstance(created_at, dt.datetime)
    assert dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc) < created_at <= utc_now() + dt.timedelta(minutes=1)


def test_partition_properties_follow_what_was_sent(emulator):
    send_events(emulator, numbered_bodies("p1", 7), partition_id="1")

    properties = all_partition_properties(emulator)

    sent_to = properties["1"]
    assert sent_to["eventhub_name"] == "hub1"
    assert sent_to["id"] == "1"
    assert sent_to["beginning_sequence_number"] == 0
    assert sent_to["last_enqueued_sequence_number"] == 6
    assert sent_to["is_empty"] is False
    assert isinstance(sent_to["last_enqueued_time_utc"], dt.datetime)
    assert abs(sent_to["last_enqueued_time_utc"] - utc_now()) < dt.timedelta(minutes=1)
    for untouched in ("0", "2", "3"):
        assert properties[untouched]["is_empty"] is True, untouched

    received = receive_through(emulator, "1", 6)
    assert sent_to["last_enqueued_offset"] == received[-1].offset
    assert sent_to["last_enqueued_time_utc"] == received[-1].enqueued_time


# --------------------------------------------------------------------------------------------
# sending: round robin, partition id, partition key


def test_batches_without_partition_spread_over_partitions(emulator):
    sent = []
    with producer_client(emulator) as producer:
        for batch in range(8):
            bodies = numbered_bodies(f"rr{batch}", 3)
            send_events(emulator, bodies, producer=producer)
            sent += bodies
        for single in numbered_bodies("single", 4):
            producer.send_event(EventData(single))
            sent.append(single)

    with receiving(emulator, starting_position="-1") as reception:
        reception.wait_for_count(len(sent))
        by_partition = reception.events_by_partition()

    received = [body_bytes(e) for events in by_partition.values() for e in events]
    assert sorted(received) == sorted(sent), "every event exactly once"
    used = [pid for pid, events in by_partition.items() if events]
    assert len(used) >= 2, f"round robin used only partitions {used}"
    properties = all_partition_properties(emulator)
    assert sum(p["last_enqueued_sequence_number"] + 1 for p in properties.values() if not p["is_empty"]) == len(sent)


def test_batch_to_a_partition_id_lands_only_there(emulator):
    bodies = numbered_bodies("to-two", 5)
    send_events(emulator, bodies, partition_id="2")

    properties = all_partition_properties(emulator)
    assert properties["2"]["last_enqueued_sequence_number"] == 4
    assert [pid for pid, p in properties.items() if not p["is_empty"]] == ["2"]
    assert [body_bytes(e) for e in receive_through(emulator, "2", 4)] == bodies


def test_a_partition_key_always_maps_to_the_same_partition(emulator):
    keys = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    sent = 0
    with producer_client(emulator) as first, producer_client(emulator) as second:
        for round_number, producer in enumerate([first, first, first, second]):
            for key in keys:
                send_events(emulator, numbered_bodies(f"{key}-{round_number}", 2), partition_key=key, producer=producer)
                sent += 2

    with receiving(emulator, starting_position="-1") as reception:
        reception.wait_for_count(sent)
        by_partition = reception.events_by_partition()

    partitions_of_key: dict[bytes, set[str]] = {}
    for pid, events in by_partition.items():
        for event in events:
            assert body_bytes(event).startswith(event.partition_key + b"-"), (event.partition_key, body_bytes(event))
            partitions_of_key.setdefault(event.partition_key, set()).add(pid)
    assert set(partitions_of_key) == {key.encode() for key in keys}
    spread = {key: pids for key, pids in partitions_of_key.items() if len(pids) != 1}
    assert not spread, f"keys that landed in more than one partition: {spread}"


# --------------------------------------------------------------------------------------------
# receiving: start positions


def test_receive_from_start_of_stream_yields_every_event_in_order(emulator):
    bodies = numbered_bodies("start", 12)
    send_events(emulator, bodies[:5], partition_id="3")
    send_events(emulator, bodies[5:], partition_id="3")

    received = receive_through(emulator, "3", 11, starting_position="-1")

    assert sequence_numbers(received) == list(range(12))
    assert [body_bytes(e) for e in received] == bodies


def test_receive_from_an_offset_starts_after_it_unless_inclusive(emulator):
    send_events(emulator, numbered_bodies("offset", 10), partition_id="2")
    offsets = [e.offset for e in receive_through(emulator, "2", 9)]

    after = receive_through(emulator, "2", 9, starting_position=offsets[4])
    assert sequence_numbers(after) == list(range(5, 10))

    from_it = receive_through(emulator, "2", 9, starting_position=offsets[4], inclusive=True)
    assert sequence_numbers(from_it) == list(range(4, 10))


def test_receive_from_a_sequence_number_honours_inclusive(emulator):
    send_events(emulator, numbered_bodies("seq", 10), partition_id="1")

    assert sequence_numbers(receive_through(emulator, "1", 9, starting_position=4, inclusive=True)) == list(range(4, 10))
    assert sequence_numbers(receive_through(emulator, "1", 9, starting_position=4)) == list(range(5, 10))
    assert sequence_numbers(receive_through(emulator, "1", 9, starting_position=0, inclusive=True)) == list(range(10))


def test_receive_from_an_enqueued_time_yields_only_later_events(emulator):
    send_events(emulator, numbered_bodies("earlier", 3), partition_id="0")
    earlier = receive_through(emulator, "0", 2)
    last_earlier = max(e.enqueued_time for e in earlier)
    # The filter carries whole milliseconds; cut half-way into the next one and send the later
    # events only once the clock is clearly past it.
    cut = last_earlier + dt.timedelta(microseconds=500)
    wait_until(lambda: utc_now() > last_earlier + dt.timedelta(milliseconds=3), 5, "the clock to pass the cut")
    later_bodies = numbered_bodies("later", 4)
    send_events(emulator, later_bodies, partition_id="0")

    later = receive_through(emulator, "0", 6, starting_position=cut)

    assert sequence_numbers(later) == [3, 4, 5, 6]
    assert [body_bytes(e) for e in later] == later_bodies
    assert all(e.enqueued_time > cut for e in later)


# --------------------------------------------------------------------------------------------
# event content


def test_event_content_round_trips_exactly(emulator):
    properties = {"text": "héllo wörld", "count": 42, "ratio": 1.5, "raw": b"\x00\xff\x10", "flag": True}
    bodies = [b"\x00\xff\xfe\x80 not utf-8", "ünïcødé ✓".encode(), bytes(range(256)) * 8, b"x"]
    send_events(emulator, bodies, partition_key="device-7", properties=properties)
    with producer_client(emulator) as producer:
        single = EventData(b"\xc3\x28 single event, format 0")
        single.properties = {"single": True}
        producer.send_event(single, partition_key="device-7")
    sent_bodies = bodies + [b"\xc3\x28 single event, format 0"]
    before_receive = utc_now()

    with receiving(emulator, starting_position="-1") as reception:
        reception.wait_for_count(len(sent_bodies))
        by_partition = reception.events_by_partition()

    assert len(by_partition) == 1, f"one partition key, one partition: {list(by_partition)}"
    (received,) = by_partition.values()
    assert [body_bytes(e) for e in received] == sent_bodies
    assert sequence_numbers(received) == list(range(len(sent_bodies)))
    offsets = [int(e.offset) for e in received]
    assert offsets == sorted(set(offsets)), f"offsets not strictly increasing: {offsets}"
    for event in received:
        assert event.partition_key == b"device-7"
        assert event.enqueued_time is not None
        assert abs(event.enqueued_time - before_receive) < dt.timedelta(minutes=1)

    decoded = {key.decode() if isinstance(key, bytes) else key: value for key, value in received[0].properties.items()}
    # pyamqp hands AMQP strings back as bytes
    assert decoded == {"text": "héllo wörld".encode(), "count": 42, "ratio": 1.5, "raw": b"\x00\xff\x10", "flag": True}
    assert type(decoded["count"]) is int
    assert type(decoded["ratio"]) is float
    assert type(decoded["flag"]) is bool
    for event in received[1:-1]:
        assert event.properties == received[0].properties
    assert received[-1].properties == {b"single": True}


# --------------------------------------------------------------------------------------------
# ownership


def test_higher_owner_level_takes_the_partition_and_the_loser_is_told(emulator):
    send_events(emulator, numbered_bodies("before", 5), partition_id="0")

    with receiving(emulator, partition_id="0", starting_position="-1", owner_level=0) as loser:
        loser.wait_for_count(5)
        with receiving(emulator, partition_id="0", starting_position="-1", owner_level=1) as winner:
            winner.wait_for_count(5)
            loser.wait_for(lambda: bool(loser.errors()), "the owner_level=0 consumer to be told it lost the partition")
            first_error = loser.errors()[0]
            assert is_ownership_loss(first_error), f"not an ownership loss: {error_text(first_error)}"

            send_events(emulator, numbered_bodies("after", 5), partition_id="0")
            winner.wait_for_sequence_number("0", 9)

            assert sequence_numbers(winner.events()) == list(range(10))
            assert sequence_numbers(loser.events()) == list(range(5)), "the loser kept receiving"


# --------------------------------------------------------------------------------------------
# failures that must be errors, not hangs


def test_wrong_sas_key_fails_the_producer_with_an_authentication_error(emulator):
    with producer_client(emulator, key=random_sas_key(), **FAILING_CALL_RETRY_OPTIONS) as producer:
        error = error_within(lambda: producer.send_batch([EventData(b"never stored")]))
    assert is_authentication_failure(error), error_text(error)
    assert partition_properties(emulator, "0")["is_empty"] is True


def test_wrong_sas_key_fails_management_with_an_authentication_error(emulator):
    with consumer_client(emulator, key=random_sas_key(), **FAILING_CALL_RETRY_OPTIONS) as client:
        error = error_within(client.get_partition_ids)
    assert is_authentication_failure(error), error_text(error)


def test_unknown_hub_is_an_error_for_management_and_sending(emulator):
    with consumer_client(emulator, hub="nosuchhub", **FAILING_CALL_RETRY_OPTIONS) as client:
        error = error_within(client.get_partition_ids)
    assert isinstance(error, EventHubError) and not is_authentication_failure(error), error_text(error)
    assert is_not_found(error), error_text(error)

    with producer_client(emulator, hub="nosuchhub", **FAILING_CALL_RETRY_OPTIONS) as producer:
        error = error_within(lambda: producer.send_batch([EventData(b"nowhere")]))
    assert isinstance(error, EventHubError) and not is_authentication_failure(error), error_text(error)
    assert is_not_found(error), error_text(error)


def test_declared_consumer_groups_receive_and_an_unknown_one_is_refused(start_emulator):
    emulator = start_emulator(consumer_groups=["analytics"])
    send_events(emulator, numbered_bodies("cg", 3), partition_id="0")

    for group in ("$Default", "analytics"):
        with receiving(emulator, consumer_group=group, partition_id="0", starting_position="-1") as reception:
            reception.wait_for_sequence_number("0", 2)
            assert sequence_numbers(reception.events()) == [0, 1, 2], group

    # The SDK retries a receiver link the server detaches right after attaching it, restarting its
    # retry count on every receive() round, so on_error never hears of it: watch the link instead.
    with PyamqpStateLog() as amqp, receiving(
        emulator, consumer_group="nosuchgroup", partition_id="0", starting_position="-1"
    ) as reception:
        reception.wait_for(
            lambda: amqp.link_errors(reception.thread_name) >= 2,
            "the emulator to refuse the unknown consumer group's link (twice)",
            ERROR_DEADLINE_S,
        )
        assert reception.events() == []


def test_max_message_size_bounds_the_producers_batches(start_emulator):
    emulator = start_emulator(max_message_size=4096)
    with producer_client(emulator) as producer:
        batch = producer.create_batch()
        assert batch.max_size_in_bytes == 4096
        with pytest.raises(ValueError):
            batch.add(EventData(b"x" * 5000))
        batch.add(EventData(b"fits"))
        producer.send_batch(batch)
    assert sum(not p["is_empty"] for p in all_partition_properties(emulator).values()) == 1


# --------------------------------------------------------------------------------------------
# retention


def test_retention_keeps_only_the_newest_events(start_emulator):
    emulator = start_emulator(retention_events=10)
    for batch in range(5):
        send_events(emulator, numbered_bodies(f"r{batch}", 5), partition_id="0")

    properties = partition_properties(emulator, "0")
    assert properties["beginning_sequence_number"] == 15
    assert properties["last_enqueued_sequence_number"] == 24

    received = receive_through(emulator, "0", 24, starting_position="-1")
    assert sequence_numbers(received) == list(range(15, 25))
    assert body_bytes(received[0]) == b"r3-0"


# --------------------------------------------------------------------------------------------
# admin: preload and faults


def test_preloaded_events_are_all_received(emulator):
    emulator.admin(
        "POST", "/preload", {"hub": "hub1", "partitions": ["0"], "events_per_partition": 1000, "size": 1024}
    )

    properties = all_partition_properties(emulator)
    assert properties["0"]["last_enqueued_sequence_number"] == 999
    assert all(properties[pid]["is_empty"] for pid in ("1", "2", "3"))

    received = receive_through(emulator, "0", 999, starting_position="-1")
    assert sequence_numbers(received) == list(range(1000))
    assert {len(body_bytes(e)) for e in received} == {1024}


def test_consumer_survives_dropped_connections_without_gaps_or_duplicates(emulator):
    with PyamqpStateLog() as amqp, receiving(
        emulator, partition_id="0", starting_position="-1"
    ) as reception:
        send_events(emulator, numbered_bodies("before-drop", 10), partition_id="0")
        reception.wait_for_sequence_number("0", 9)
        opened_before = amqp.connections_opened(reception.thread_name)

        emulator.admin("POST", "/faults/drop-connections")
        send_events(emulator, numbered_bodies("after-drop", 10), partition_id="0")
        reception.wait_for_sequence_number("0", 19)

        assert amqp.connections_opened(reception.thread_name) > opened_before, (
            "the consumer never had to reconnect: drop-connections did not cut it off"
        )
        received = reception.events("0")
    assert sequence_numbers(received) == list(range(20))
    assert [body_bytes(e) for e in received] == numbered_bodies("before-drop", 10) + numbered_bodies("after-drop", 10)


def test_consumer_survives_a_server_busy_detach(emulator):
    with PyamqpStateLog() as amqp, receiving(
        emulator, partition_id="0", starting_position="-1"
    ) as reception:
        send_events(emulator, numbered_bodies("before-detach", 5), partition_id="0")
        reception.wait_for_sequence_number("0", 4)
        opened_before = amqp.connections_opened(reception.thread_name)

        emulator.admin(
            "POST", "/faults/detach", {"hub": "hub1", "partition": "0", "condition": "com.microsoft:server-busy"}
        )
        send_events(emulator, numbered_bodies("after-detach", 5), partition_id="0")
        reception.wait_for_sequence_number("0", 9)

        assert amqp.connections_opened(reception.thread_name) > opened_before, (
            "the consumer never re-opened its link: the detach did not reach it"
        )
        assert sequence_numbers(reception.events("0")) == list(range(10))


def test_clients_ride_out_a_short_refusal_of_connections(emulator):
    emulator.admin("POST", "/faults/refuse-connections", {"seconds": 3})
    with consumer_client(emulator, retry_total=8) as client:
        call = BackgroundCall(client.get_partition_ids)
        assert not amqp_header_answered(emulator), "a new connection was served while refusing connections"
        outcome = call.outcome(within=60)
    assert outcome == ("returned", HUB1_PARTITIONS)
    assert amqp_header_answered(emulator), "connections still refused after the window"


# --------------------------------------------------------------------------------------------
# the official checkpoint store (Azurite) with the emulator


def blob_checkpoint_store(azurite, container_name: str):
    from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore

    return BlobCheckpointStore.from_connection_string(azurite.connection_string, container_name)


def test_processor_with_blob_checkpoint_store_resumes_after_its_checkpoints(emulator, azurite):
    from azure.storage.blob import ContainerClient

    container = ContainerClient.from_connection_string(
        azurite.connection_string, f"checkpoints-{uuid.uuid4().hex[:12]}"
    )
    container.create_container()
    send_events(emulator, numbered_bodies("first", 3), partition_id="0")
    send_events(emulator, numbered_bodies("first", 3), partition_id="1")

    with receiving(
        emulator,
        client_options={"checkpoint_store": blob_checkpoint_store(azurite, container.container_name)},
        checkpoint_every_event=True,
        starting_position="-1",
    ) as first:
        first.wait_for_sequence_number("0", 2)
        first.wait_for_sequence_number("1", 2)
    last_offsets = {pid: events[-1].offset for pid, events in first.events_by_partition().items()}

    # the layout every SDK processor (and hubcap) shares: lower-cased, namespace as the client saw it
    prefix = f"{emulator.amqp_host}:{emulator.amqp_port}/hub1/$default"
    blobs = {blob.name: blob.metadata for blob in container.list_blobs(include=["metadata"])}
    for pid in ("0", "1"):
        assert blobs.get(f"{prefix}/checkpoint/{pid}") == {"sequencenumber": "2", "offset": last_offsets[pid]}, blobs
    for pid in HUB1_PARTITIONS:
        # released on close: ownerid="" (which the storage SDK reads back as None)
        ownership = blobs.get(f"{prefix}/ownership/{pid}", {})
        assert ownership.get("ownerid", "<missing>") in ("", None), f"not released: {pid} {blobs}"

    send_events(emulator, numbered_bodies("second", 2), partition_id="0")
    send_events(emulator, numbered_bodies("second", 1), partition_id="1")
    with receiving(
        emulator,
        client_options={"checkpoint_store": blob_checkpoint_store(azurite, container.container_name)},
        starting_position="-1",
    ) as second:
        second.wait_for_sequence_number("0", 4)
        second.wait_for_sequence_number("1", 3)
        assert sequence_numbers(second.events("0")) == [3, 4]
        assert sequence_numbers(second.events("1")) == [3]
