"""A seeded chaos test: three `hubcap run` instances share one consumer group (Azure Blob
checkpoint store on Azurite) over a 16-partition hub of the emulator, while a seeded schedule
kills them (kill -9 at random moments, and between a window's commit and its checkpoint through
the crash hook `HUBCAP_TEST_CRASH=after_commit:N` / `after_record:N`), restarts them with
SIGTERM, pauses an owner with SIGSTOP until its ownership expired and was taken and then lets
the zombie go on (SIGCONT), drops the emulator's connections, detaches its links, and stops
Azurite for 8-15 s. The official SDK's producer sends to every partition throughout and keeps a
ledger of every event id it sent. At the end the archive is judged three ways: `hubcap verify`
must call it exact (no gaps, no duplicates, no checkpoint ahead of the data); the ledger and the
hub (read back with the SDK) must find every acknowledged id archived, every event of the hub
archived exactly once and as itself, and no id archived more often than the hub holds it; and
verify's report must agree with what fastavro reads (per partition, and a sample of files field
by field with `hubcap cat` and the blobs' metadata).

Run by the README's test command (short form: about 80 s of faults per sink, two sinks):

    bash scripts/test.sh --python-only -- -k chaos

- `HUBCAP_CHAOS_SEED=N` replays a seed (the seed is printed at the start and in every failure);
  otherwise each run draws a new one.
- `HUBCAP_CHAOS_SOAK=1` runs the soak: 10 minutes of faults per sink, with proportionally more of
  every fault (`HUBCAP_CHAOS_SECONDS` sets another duration).
- `HUBCAP_CHAOS_RESULTS=FILE` appends one JSON line of counts per run to FILE.

Each run leaves its files in the test's tmp_path: `schedule.txt` (the seeded schedule),
`harness-events.txt` (what the harness did, when, and every incarnation with how it ended),
`chaos-a.007.log` (the JSON log of instance chaos-a's 8th incarnation), `report.txt`.
"""

from __future__ import annotations

import json
import os
import time

import pytest

pytest.register_assert_rewrite("chaos_support", "balancing_support", "hubcap_process", "blob_support")

from chaos_support import (  # noqa: E402
    Archive,
    CAPTURE_CONTAINER,
    ChaosSettings,
    chaos_seed,
    duplicate_forensics,
    judge_cross_check,
    judge_harness,
    judge_ledger,
    judge_verify,
    read_blob_archive,
    REFERENCE_CONSUMER_GROUP,
    read_file_archive,
    read_hub,
    suspect_positions,
    run_chaos,
    run_verify,
    summary,
)
from conftest import emulator_binary, hubcap_binary  # noqa: E402
from hubcap_process import hubcap_is_built  # noqa: E402

pytest_plugins = ["hubcap_process", "blob_support"]

pytestmark = pytest.mark.skipif(
    not (hubcap_is_built() and emulator_binary().is_file()),
    reason=f"{hubcap_binary()} or {emulator_binary()} is not built: run `bash scripts/test.sh`",
)

SETTINGS = ChaosSettings.from_env()


@pytest.mark.timeout(SETTINGS.test_timeout_s)
@pytest.mark.parametrize("sink_kind", ["avro_blob", "avro_file"])
def test_chaos_archive_holds_every_event_exactly_once(sink_kind, start_emulator, azurite_server, tmp_path):
    seed = chaos_seed()
    settings = SETTINGS
    reproduce = f"HUBCAP_CHAOS_SEED={seed}" + (" HUBCAP_CHAOS_SOAK=1" if settings.soak else "")
    print(f"chaos seed {seed} ({sink_kind}; reproduce with {reproduce} bash scripts/test.sh --python-only "
          f"-- -k 'chaos and {sink_kind}'); files in {tmp_path}")
    started = time.monotonic()
    emulator = start_emulator(hubs={"hub1": settings.partitions}, consumer_groups=[REFERENCE_CONSUMER_GROUP])
    run = run_chaos(
        seed=seed, settings=settings, sink_kind=sink_kind, emulator=emulator, azurite=azurite_server,
        workdir=tmp_path,
    )

    judging = time.monotonic()
    if sink_kind == "avro_file":
        files = read_file_archive(run.capture_dir)
    else:
        files = read_blob_archive(azurite_server.connection_string, CAPTURE_CONTAINER, tmp_path / "downloaded")
    archive = Archive.index(files)
    hub, hub_problem = read_hub(emulator, suspect_positions(archive))
    verify = run_verify(run.config_path)
    (tmp_path / "verify.json").write_text(verify.stdout)
    findings = judge_harness(run)
    findings += judge_verify(run, verify)
    ledger_findings, stats = judge_ledger(run, archive, hub, hub_problem)
    findings += ledger_findings
    findings += judge_cross_check(run, archive, verify)
    result = summary(run, stats, verify, len(files))
    result["judge_s"] = round(time.monotonic() - judging, 1)
    result["test_s"] = round(time.monotonic() - started, 1)
    result["findings"] = [f"[{f.judge}] {f.title}" for f in findings]

    headline = (
        f"seed {seed}, {sink_kind}: {result['kill9']} kill -9, {result['hook_after_commit']} after_commit + "
        f"{result['hook_after_record']} after_record hook kills, {result['sigterm']} SIGTERM, "
        f"{result['zombies_taken']} zombies, {result['outages']} Azurite outages, {result['drops']} drops, "
        f"{result['detaches']} detaches; {result['events_acked']} events acknowledged "
        f"({result['events_uncertain']} uncertain), {result['hub_events']} in the hub, {result['files']} files, "
        f"{result['archived_records']} archived records, {result['duplicate_records']} duplicate records, "
        f"{result['lost_acked']} acknowledged lost, {result['producer_duplicates_in_hub']} ids the producer put "
        f"into the hub twice; verify exit {result['verify_exit']} ok={result['verify_ok']}; "
        f"{result['test_s']:.0f} s"
    )
    print(headline)
    print(json.dumps(result, sort_keys=True))
    results_file = os.environ.get("HUBCAP_CHAOS_RESULTS")
    if results_file:
        with open(results_file, "a") as out:
            out.write(json.dumps(result, sort_keys=True) + "\n")

    report = [headline, f"reproduce: {reproduce}", f"files: {tmp_path}", ""]
    report += [finding.render() for finding in findings]
    if stats["duplicate_records"] or stats["duplicate_ids"]:
        report += ["", "duplicates, where they came from:", *duplicate_forensics(run, archive)]
    (tmp_path / "report.txt").write_text("\n".join(report) + "\n\n" + run.fleet.timeline() + "\n")
    assert not findings, "\n".join(report) + f"\n(full report with every incarnation: {tmp_path / 'report.txt'})"
