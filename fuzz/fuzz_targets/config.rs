//! The config reader end to end, as `hubcap check-config` and `hubcap run` use it: TOML text,
//! `${VAR}` substitution, validation of every section.
//!
//! The environment is a fixed map, not the process's: the fuzzer must see the same answer for
//! the same input, and real variables must not leak into crash reports. Its secrets carry
//! markers, and no error message, nor the parsed Event Hubs connection, may ever show one.
#![no_main]

use hubcap::config::{self, EventHubConnection};
use libfuzzer_sys::fuzz_target;

/// Secret values the environment hands out, each found after its credential keyword.
const HUB_KEY: &str = "FuzzLeakHubKey0";
/// base64 of `FuzzLeakStorageKey`: Shared Key signing decodes it, so it must be valid base64.
const STORAGE_KEY: &str = "RnV6ekxlYWtTdG9yYWdlS2V5";
const SAS_SIGNATURE: &str = "FuzzLeakSasSig0";
const MARKERS: [&str; 3] = [HUB_KEY, STORAGE_KEY, SAS_SIGNATURE];

/// The variables `config.example.toml` and `tests/config_corpus` use, so that the seed corpus
/// parses as it does in the tests, plus a few typed values (`${PREFETCH}` for an integer key).
fn env(name: &str) -> Option<String> {
    let value = match name {
        "EVENTHUB_CONNECTION_STRING" => format!(
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=listen;\
             SharedAccessKey={HUB_KEY};EntityPath=telemetry"
        ),
        "EVENTHUB_CONNECTION_STRING_WITHOUT_ENTITY_PATH" => format!(
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=listen;\
             SharedAccessKey={HUB_KEY}"
        ),
        "STORAGE_CONNECTION_STRING" => format!(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={STORAGE_KEY};\
             EndpointSuffix=core.windows.net"
        ),
        "STORAGE_SAS_CONNECTION_STRING" => format!(
            "BlobEndpoint=https://acct.blob.core.windows.net/;\
             SharedAccessSignature=sv=2022-11-02&sig={SAS_SIGNATURE}"
        ),
        "CHECKPOINT_CONTAINER_SAS_URL" => format!(
            "https://acct.blob.core.windows.net/checkpoints?sv=2022-11-02&sig={SAS_SIGNATURE}"
        ),
        "AZURE_CLIENT_SECRET" => "client-secret".into(),
        "CREDENTIALS_DIRECTORY" => "/nonexistent/hubcap-fuzz/credentials".into(),
        "DIR" => "/nonexistent/hubcap-fuzz".into(),
        "HOSTNAME" => "fuzzhost".into(),
        "HUB" => "telemetry".into(),
        "PREFETCH" => "300".into(),
        "FLAG" => "true".into(),
        "EMPTY" => String::new(),
        _ => return None,
    };
    Some(value)
}

fuzz_target!(|data: &[u8]| {
    // `config::load` refuses a file that is not UTF-8 when reading it, before any parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A marker typed into the file itself may be quoted back legitimately (it did not come
    // from a secret), so the redaction properties hold only for the others.
    let checked = !MARKERS.iter().any(|marker| text.contains(marker));
    match config::parse(text, "fuzz.toml", &env) {
        Ok(config) => {
            if checked {
                if let EventHubConnection::ConnectionString(parsed) = &config.eventhub.connection {
                    let shown = format!("{parsed:?}");
                    assert!(!MARKERS.iter().any(|m| shown.contains(m)), "{shown}");
                }
            }
        }
        Err(errors) => {
            assert!(!errors.errors.is_empty(), "an Err without a problem");
            if checked {
                let shown = format!("{errors}\n{errors:?}");
                assert!(!MARKERS.iter().any(|m| shown.contains(m)), "{shown}");
            }
        }
    }
});
