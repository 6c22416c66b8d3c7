//! Nothing secret, ever: a whole run at trace level, with the blob checkpoint store and the
//! avro_blob sink on Azurite, a short token lifetime (so tokens are signed and renewed), a
//! dropped connection and a storage outage (so errors are logged), must not print the SAS key,
//! the storage account key, or any SAS token signature, on stdout or stderr.

mod azurite;
mod common;

use std::time::Duration;

use common::*;

/// The devstoreaccount1 key Azurite accepts (public, in Azurite's README).
const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_level_run_with_faults_never_logs_a_key_or_token() {
    let mut storage = azurite::Azurite::start();
    let emulator = start_emulator(2).await;
    let work = Workdir::new();
    preload_each(&emulator, 50, 100);
    let config = work
        .config(emulator.amqp_addr())
        .set("eventhub", "name", HUB)
        .set("eventhub", "token_lifetime", "5s")
        .set("checkpoint_store", "type", "azure_blob")
        .set(
            "checkpoint_store",
            "connection_string",
            &storage.connection_string(),
        )
        .set("checkpoint_store", "container", "checkpoints")
        .set("sink", "type", "avro_blob")
        .set("sink", "connection_string", &storage.connection_string())
        .set("sink", "container", "capture")
        .set("log", "level", "trace");
    let config = config.remove("checkpoint_store", "path");
    let mut hubcap = Hubcap::start("secrets", &work, &config);

    hubcap
        .wait_for_log(
            "a committed window",
            Duration::from_secs(30),
            LogLine::is_commit,
        )
        .await;
    emulator.drop_connections();
    storage.stop();
    preload_each(&emulator, 20, 100);
    // Long enough for a token renewal (5 s lifetime renews at 2.5 s) and failing storage calls.
    hubcap
        .wait_for_log("a storage failure", Duration::from_secs(30), |line| {
            line.message.contains("failed")
        })
        .await;
    storage.restart();
    hubcap
        .wait_for_log("a token renewal", Duration::from_secs(30), |line| {
            line.message.contains("token renewed")
        })
        .await;
    hubcap.terminate();
    let status = hubcap.wait_exit(DRAIN_TIMEOUT * 2).await;
    assert!(status.success(), "hubcap exited with {status:?}");
    // The avro_blob sink writes nothing to stdout: anything there is a leak or a bug.
    assert!(hubcap.events().is_empty());

    let output = hubcap.stderr();
    assert!(
        output.len() > 10_000,
        "a trace run should log plenty; got {} bytes",
        output.len()
    );
    for (what, secret) in [
        ("the SAS key", KEY),
        ("the storage account key", ACCOUNT_KEY),
        ("a SAS token signature", "sig="),
        ("a SAS token", "SharedAccessSignature sr="),
        (
            "a Shared Key authorization header",
            "SharedKey devstoreaccount1:",
        ),
    ] {
        assert!(
            !output.contains(secret),
            "{what} appears in hubcap's output:\n{}",
            context(&output, secret)
        );
    }
    emulator.shutdown().await;
}

/// The lines around the first occurrence of `needle`, for the failure message.
fn context(haystack: &str, needle: &str) -> String {
    let at = haystack.find(needle).unwrap_or(0);
    let start = haystack[..at].rfind('\n').unwrap_or(0);
    let end = haystack[at..].find('\n').map_or(haystack.len(), |i| at + i);
    haystack[start..end].to_owned()
}
