//! Claims-based security: put-token answers, what a grant covers, and token lifetimes.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use hubcap_emulator::token::generate_sas_token;
use hubcap_emulator::{Emulator, EmulatorConfig};

const UNAUTHORIZED: &str = "amqp:unauthorized-access";

async fn put_sas(client: &mut Client, audience: &str, token: &str) -> Response {
    client
        .put_token(SAS_TOKEN_TYPE, audience, token, unix_now() + 3600)
        .await
}

/// An unsigned Entra ID-style token: `header.payload.signature`, base64url JSON.
fn jwt(audience: &str, expires_at_unix: u64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD
        .encode(format!(r#"{{"aud":"{audience}","exp":{expires_at_unix}}}"#).as_bytes());
    format!("{header}.{payload}.c2lnbmF0dXJl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_sas_token_gets_202() {
    let emulator = start_default().await;
    let mut client = Client::connect(&emulator).await;
    let response = put_sas(
        &mut client,
        &audience(&emulator, HUB),
        &sas_token(&emulator, HUB),
    )
    .await;
    assert_eq!(response.status_code, 202, "{}", response.description);
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sas_tokens_get_401() {
    let emulator = start_default().await;
    let mut client = Client::connect(&emulator).await;
    let resource = audience(&emulator, HUB);
    let in_an_hour = unix_now() + 3600;
    let cases = [
        (
            "wrong key",
            generate_sas_token(&resource, KEY_NAME, "not-the-key", in_an_hour),
        ),
        (
            "expired",
            generate_sas_token(&resource, KEY_NAME, KEY, unix_now() - 10),
        ),
        (
            "unknown key name",
            generate_sas_token(&resource, "SomeOtherPolicy", KEY, in_an_hour),
        ),
        (
            "signed for hub2, put for hub1",
            generate_sas_token(&audience(&emulator, OTHER_HUB), KEY_NAME, KEY, in_an_hour),
        ),
        ("not a token", "SharedAccessSignature garbage".to_owned()),
    ];
    for (what, token) in cases {
        let response = put_sas(&mut client, &resource, &token).await;
        assert_eq!(
            response.status_code, 401,
            "{what}: {}",
            response.description
        );
    }
    // None of the refusals granted anything: a data link is still unauthorized.
    let mut receiver = client.receiver(&ReceiverOptions::partition("0")).await;
    assert_eq!(refusal(&mut receiver).await.condition, UNAUTHORIZED);
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_links_without_a_token_are_unauthorized() {
    let emulator = start_default().await;
    let mut client = Client::connect(&emulator).await;
    let mut receiver = client.receiver(&ReceiverOptions::partition("0")).await;
    let error = refusal(&mut receiver).await;
    assert_eq!(error.condition, UNAUTHORIZED, "{error:?}");
    let mut sender = client.sender(HUB).await;
    let error = sender_detach_error(&mut sender).await;
    assert_eq!(error.condition, UNAUTHORIZED, "{error:?}");
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_hub2_does_not_open_links_on_hub1() {
    let emulator = start_default().await;
    let mut client = Client::authorized(&emulator, OTHER_HUB).await;
    let mut receiver = client.receiver(&ReceiverOptions::partition("0")).await;
    assert_eq!(refusal(&mut receiver).await.condition, UNAUTHORIZED);
    let mut sender = client.sender(&format!("{HUB}/Partitions/0")).await;
    assert_eq!(
        sender_detach_error(&mut sender).await.condition,
        UNAUTHORIZED
    );
    // The same connection may use hub2.
    let mut hub2 = client
        .receiver(&ReceiverOptions::partition("1").hub(OTHER_HUB))
        .await;
    let mut sender = client.sender(&format!("{OTHER_HUB}/Partitions/1")).await;
    publish(&mut sender, event_message(b"hub2 event")).await;
    assert_eq!(next_event(&mut hub2).await.data(), b"hub2 event");
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_token_covers_only_that_consumer_group() {
    let emulator = start(EmulatorConfig {
        consumer_groups: vec!["cg1".into()],
        ..config()
    })
    .await;
    let mut client = Client::connect(&emulator).await;
    // The Python consumer's audience: lower-case `consumergroups`, `$default`.
    let resource = format!("{}/consumergroups/$default", audience(&emulator, HUB));
    let token = generate_sas_token(&resource, KEY_NAME, KEY, unix_now() + 3600);
    assert_eq!(
        put_sas(&mut client, &resource, &token).await.status_code,
        202
    );

    preload(&emulator, 0, 1, 8);
    let mut allowed = client.receiver(&ReceiverOptions::partition("0")).await;
    assert_eq!(next_event(&mut allowed).await.sequence_number, 0);
    let mut other_group = client
        .receiver(&ReceiverOptions::partition("0").consumer_group("cg1"))
        .await;
    assert_eq!(refusal(&mut other_group).await.condition, UNAUTHORIZED);
    let mut sender = client.sender(HUB).await;
    assert_eq!(
        sender_detach_error(&mut sender).await.condition,
        UNAUTHORIZED
    );
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_detached_when_their_token_expires() {
    let emulator = start_default().await;
    let mut client = Client::connect(&emulator).await;
    let resource = audience(&emulator, HUB);
    let expiry = unix_now() + 2;
    let token = generate_sas_token(&resource, KEY_NAME, KEY, expiry);
    let response = client
        .put_token(SAS_TOKEN_TYPE, &resource, &token, expiry)
        .await;
    assert_eq!(response.status_code, 202, "{}", response.description);
    let mut receiver = client.receiver(&ReceiverOptions::partition("0")).await;
    let mut sender = client.sender(&format!("{HUB}/Partitions/0")).await;

    let error = detach_error(&mut receiver).await;
    assert_eq!(error.condition, UNAUTHORIZED, "{error:?}");
    assert!(unix_now() >= expiry, "detached before the token expired");
    let error = sender_detach_error(&mut sender).await;
    assert_eq!(error.condition, UNAUTHORIZED, "{error:?}");
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_token_put_before_expiry_keeps_links_alive() {
    let emulator = start_default().await;
    let mut client = Client::connect(&emulator).await;
    let resource = audience(&emulator, HUB);
    let expiry = unix_now() + 2;
    let token = generate_sas_token(&resource, KEY_NAME, KEY, expiry);
    let response = client
        .put_token(SAS_TOKEN_TYPE, &resource, &token, expiry)
        .await;
    assert_eq!(response.status_code, 202, "{}", response.description);
    let mut receiver = client.receiver(&ReceiverOptions::partition("0")).await;
    let mut sender = client.sender(&format!("{HUB}/Partitions/0")).await;

    client.put_sas_token(&emulator, HUB).await;
    // The emulator re-checks a link's grant within a second of the old token's expiry.
    eventually(
        "the first token is well past expiry",
        Duration::from_secs(5),
        || unix_now() >= expiry + 2,
    )
    .await;
    publish(&mut sender, event_message(b"after the first expiry")).await;
    assert_eq!(
        next_event(&mut receiver).await.data(),
        b"after the first expiry"
    );
    client.close().await;
    emulator.shutdown().await;
}

async fn jwt_answer(accept_jwt: bool, aud: &str) -> i32 {
    let emulator: Emulator = start(EmulatorConfig {
        accept_jwt,
        ..config()
    })
    .await;
    let mut client = Client::connect(&emulator).await;
    let token = jwt(aud, unix_now() + 3600);
    let response = client
        .put_token("jwt", &audience(&emulator, HUB), &token, unix_now() + 3600)
        .await;
    if response.status_code == 202 {
        // The grant opens data links like a SAS token would.
        preload(&emulator, 0, 1, 8);
        let mut receiver = client.receiver(&ReceiverOptions::partition("0")).await;
        assert_eq!(next_event(&mut receiver).await.sequence_number, 0);
    }
    client.close().await;
    emulator.shutdown().await;
    response.status_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_gets_202_when_jwts_are_accepted() {
    assert_eq!(jwt_answer(true, "https://eventhubs.azure.net/").await, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_gets_401_when_jwts_are_not_accepted() {
    assert_eq!(jwt_answer(false, "https://eventhubs.azure.net/").await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_for_another_audience_gets_401() {
    assert_eq!(jwt_answer(true, "https://storage.azure.com/").await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_jwt_gets_401() {
    let emulator = start(EmulatorConfig {
        accept_jwt: true,
        ..config()
    })
    .await;
    let mut client = Client::connect(&emulator).await;
    let token = jwt("https://eventhubs.azure.net/", unix_now() - 10);
    let response = client
        .put_token("jwt", &audience(&emulator, HUB), &token, unix_now())
        .await;
    assert_eq!(response.status_code, 401, "{}", response.description);
    client.close().await;
    emulator.shutdown().await;
}
