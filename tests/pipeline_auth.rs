//! Authentication end to end: a wrong SAS key stops the real binary at once with a clear error,
//! short-lived SAS tokens are renewed on a live connection, and Entra ID tokens from a
//! credential open receivers (library level, with a fake credential).

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use hubcap::eventhubs::{
    Credential, EventHubClient, EventHubsError, EventPosition, ReceivedEvent, ReceiverOptions,
    SignedToken, TokenProvider,
};
use hubcap::secret::Secret;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_sas_key_fails_fast_with_a_clear_error() {
    const WRONG_KEY: &str = "WrongKeyMaterial7c2e91b4d0";
    let emulator = start_emulator(2).await;
    let work = Workdir::new();
    let config = work.config_with_key(emulator.amqp_addr(), WRONG_KEY);
    let started = Instant::now();
    let mut hubcap = Hubcap::start("hubcap", &work, &config);
    let status = hubcap.wait_exit(Duration::from_secs(15)).await;
    eprintln!(
        "wrong key: exited with {status} after {:?}",
        started.elapsed()
    );
    assert!(
        !status.success(),
        "hubcap must fail, it exited with {status}"
    );
    let stderr = hubcap.stderr();
    assert!(
        stderr.contains("refused the credentials"),
        "stderr does not name the refusal:\n{stderr}"
    );
    assert!(
        !stderr.contains(WRONG_KEY) && !stderr.contains(KEY),
        "stderr shows a key:\n{stderr}"
    );
    assert!(
        hubcap.has_log(|l| l.level == "ERROR"),
        "no error record in the log:\n{stderr}"
    );
    assert_eq!(hubcap.event_count(), 0);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_renewed() {
    let emulator = start_emulator(2).await;
    let work = Workdir::new();
    let config = work
        .config(emulator.amqp_addr())
        .set("eventhub", "token_lifetime", "5s")
        .set("log", "level", "info,hubcap::eventhubs::client=debug");
    let publishing = stream(&emulator, 100, 200);
    let mut hubcap = Hubcap::start("hubcap", &work, &config);
    hubcap
        .wait_for_log("connected", Duration::from_secs(15), LogLine::is_connection)
        .await;
    let connected = Instant::now();
    // Four lifetimes of the first token: without renewal the emulator detaches every link
    // with amqp:unauthorized-access five seconds in, and the stream stops.
    let mut printed = 0;
    while connected.elapsed() < Duration::from_secs(18) {
        eventually(
            "events keep arriving while tokens expire",
            Duration::from_secs(5),
            || hubcap.event_count() > printed,
        )
        .await;
        printed = hubcap.event_count();
        assert!(hubcap.is_running(), "hubcap stopped:\n{}", hubcap.stderr());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let expected = publishing.stop_and_list(&emulator).await;
    let published = expected.len();
    hubcap
        .wait_to_deliver(&expected, Duration::from_secs(20))
        .await;
    let printed = hubcap.stop_cleanly().await;
    assert_exactly_once("with 5 s tokens", &printed, &expected);

    let stderr = hubcap.stderr();
    assert!(
        !stderr.to_lowercase().contains("unauthorized"),
        "a token expired under a link:\n{stderr}"
    );
    let renewals = hubcap.count_logs(|l| l.message == "token renewed");
    assert!(
        renewals >= 5,
        "{renewals} renewals in 18 s of 5 s tokens:\n{stderr}"
    );
    assert_eq!(
        hubcap.connections(),
        1,
        "renewal keeps the connection; it does not reconnect:\n{stderr}"
    );
    eprintln!("{published} events, {renewals} token renewals on one connection");
    emulator.shutdown().await;
}

/// An Entra ID credential stand-in: unsigned JWTs for Event Hubs that live `lifetime`.
struct FakeEntra {
    lifetime: Duration,
    /// How often hubcap asked for a token.
    calls: AtomicUsize,
    /// The scopes it asked for.
    scopes: Mutex<Vec<String>>,
}

impl FakeEntra {
    fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            calls: AtomicUsize::new(0),
            scopes: Mutex::new(Vec::new()),
        }
    }

    fn jwt(expires_at_unix: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = format!(r#"{{"aud":"https://eventhubs.azure.net","exp":{expires_at_unix}}}"#);
        format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims))
    }
}

impl TokenProvider for FakeEntra {
    fn token(
        &self,
        scope: &str,
    ) -> Pin<Box<dyn Future<Output = Result<SignedToken, String>> + Send + '_>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.scopes.lock().unwrap().push(scope.to_owned());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let expires_at_unix = (now + self.lifetime).as_secs();
        let token = SignedToken {
            token: Secret::new(Self::jwt(expires_at_unix)),
            expires_at: UNIX_EPOCH + Duration::from_secs(expires_at_unix),
        };
        Box::pin(async move { Ok(token) })
    }
}

async fn receive(
    receiver: &mut hubcap::eventhubs::PartitionReceiver,
    count: usize,
) -> Vec<ReceivedEvent> {
    let mut events = Vec::new();
    within("receive the events", STEP, async {
        while events.len() < count {
            receiver
                .recv_batch(count - events.len(), &mut events)
                .await
                .expect("receive");
        }
    })
    .await;
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_id_tokens_via_a_credential() {
    let mut config = emulator_config(2);
    config.accept_jwt = true;
    let emulator = start_emulator_with(config).await;
    partitions(&emulator)[0].preload(50, 100).expect("preload");
    // Five-second tokens, so the test also sees one renewed through the credential.
    let entra = Arc::new(FakeEntra::new(Duration::from_secs(5)));
    let client = EventHubClient::new(client_settings(
        emulator.amqp_addr(),
        Credential::Provider(entra.clone()),
    ))
    .expect("client settings are valid");
    let options = ReceiverOptions {
        prefetch: 100,
        prefetch_bytes: 1 << 20,
        owner_level: Some(0),
    };
    let mut receiver = within(
        "open a receiver",
        STEP,
        client.open_receiver("0", &EventPosition::Earliest, options),
    )
    .await
    .expect("a JWT from the credential authorises the receiver");
    let events = receive(&mut receiver, 50).await;
    let seqs: Vec<i64> = events.iter().map(|e| e.sequence_number).collect();
    assert_eq!(seqs, (0..50).collect::<Vec<_>>());
    assert!(entra.calls.load(Ordering::SeqCst) >= 1);
    assert!(entra
        .scopes
        .lock()
        .unwrap()
        .iter()
        .all(|s| s == "https://eventhubs.azure.net/.default"));

    // Past the first token's expiry the link still delivers: the client asked the credential
    // again and put the new token on the connection.
    let first_expiry = Instant::now() + Duration::from_secs(6);
    eventually(
        "the client asks the credential for a second token",
        Duration::from_secs(10),
        || entra.calls.load(Ordering::SeqCst) >= 2,
    )
    .await;
    tokio::time::sleep_until(first_expiry.into()).await;
    partitions(&emulator)[0].preload(10, 100).expect("preload");
    let later = receive(&mut receiver, 10).await;
    assert_eq!(later.first().map(|e| e.sequence_number), Some(50));
    receiver.close().await;
    client.close().await;

    // The same credential where the namespace does not accept Entra ID tokens.
    let strict = start_emulator(2).await;
    let refused = EventHubClient::new(client_settings(
        strict.amqp_addr(),
        Credential::Provider(Arc::new(FakeEntra::new(Duration::from_secs(60)))),
    ))
    .expect("client settings are valid");
    let error = within(
        "open a receiver",
        STEP,
        refused.open_receiver("0", &EventPosition::Earliest, options),
    )
    .await
    .expect_err("a namespace without Entra ID refuses the token");
    assert!(
        matches!(error, EventHubsError::Unauthorized { .. }),
        "{error:?}"
    );
    refused.close().await;
    strict.shutdown().await;
    emulator.shutdown().await;
}
