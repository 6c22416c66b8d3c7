//! The blob checkpoint store and the storage client against a real Azurite: the Python store's
//! HTTP sequence, the SDKs' blob names, every way of authenticating, and how failures surface.

mod azurite;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use azurite::Azurite;
use bytes::Bytes;
use hubcap::checkpoint::blob::BlobCheckpointStore;
use hubcap::checkpoint::{
    Checkpoint, CheckpointStore, NameCase, OwnershipClaim, StoreError, StoreScope,
};
use hubcap::secret::Secret;
use hubcap::storage::StorageAccount;
use hubcap::storage::{BlobContainer, Condition, StorageError};

const CONTAINER: &str = "checkpoints";

fn scope() -> StoreScope {
    StoreScope {
        fully_qualified_namespace: "myns.servicebus.windows.net".into(),
        event_hub: "hub1".into(),
        consumer_group: "$Default".into(),
    }
}

fn connection_string(text: String) -> StorageAccount {
    StorageAccount::ConnectionString(Secret::new(text))
}

/// The container behind an account-key connection string, created.
async fn container(azurite: &Azurite) -> BlobContainer {
    let container = BlobContainer::connect(
        &connection_string(azurite.connection_string()),
        CONTAINER,
        &Default::default(),
    )
    .unwrap();
    container.create_container_if_missing().await.unwrap();
    container
}

fn claim(partition_id: &str, owner_id: &str, version: Option<&str>) -> OwnershipClaim {
    OwnershipClaim {
        partition_id: partition_id.into(),
        owner_id: owner_id.into(),
        version: version.map(str::to_owned),
        commit: None,
    }
}

fn checkpoint(
    partition_id: &str,
    offset: Option<&str>,
    sequence_number: Option<i64>,
) -> Checkpoint {
    Checkpoint {
        partition_id: partition_id.into(),
        offset: offset.map(str::to_owned),
        sequence_number,
        committed_in: None,
    }
}

fn assert_recent(time: SystemTime) {
    let age = SystemTime::now()
        .duration_since(time)
        .unwrap_or_else(|early| early.duration());
    assert!(age < Duration::from_secs(60), "{time:?} is not about now");
}

#[tokio::test]
async fn claims_follow_the_python_store_create_renew_lose_and_release() {
    let azurite = Azurite::start();
    let container = container(&azurite).await;
    let store = BlobCheckpointStore::new(container.clone(), scope(), NameCase::Lower);
    let ownership_blob = "myns.servicebus.windows.net/hub1/$default/ownership/0";

    // First claim creates an empty blob carrying only ownerid.
    let won = store
        .claim_ownership(&[claim("0", "owner-a", None)])
        .await
        .unwrap();
    assert_eq!(won.len(), 1);
    assert_eq!(won[0].owner_id, "owner-a");
    assert_recent(won[0].last_modified);
    let created = container
        .get_properties(ownership_blob)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(created.content_length, 0);
    assert_eq!(
        created.metadata,
        HashMap::from([("ownerid".to_owned(), "owner-a".to_owned())])
    );
    assert_eq!(
        created.etag, won[0].version,
        "the claim reports the blob's ETag, unquoted"
    );
    assert!(!won[0].version.contains('"'));

    // Listing reports the same version; renewing with it moves the ETag on.
    let listed = store.list_ownership().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].partition_id.as_str(), listed[0].owner_id.as_str()),
        ("0", "owner-a")
    );
    assert_eq!(listed[0].version, won[0].version);
    let first_etag = won[0].version.clone();
    let renewed = store
        .claim_ownership(&[claim("0", "owner-a", Some(&first_etag))])
        .await
        .unwrap();
    assert_eq!(renewed.len(), 1);
    assert_ne!(renewed[0].version, first_etag);

    // A stale ETag loses (412) and is left out; a create over an existing blob loses (409);
    // a claim in the same batch that can win still wins.
    let mixed = store
        .claim_ownership(&[
            claim("0", "owner-b", Some(&first_etag)),
            claim("0", "owner-c", None),
            claim("1", "owner-b", None),
        ])
        .await
        .unwrap();
    assert_eq!(mixed.len(), 1);
    assert_eq!(
        (mixed[0].partition_id.as_str(), mixed[0].owner_id.as_str()),
        ("1", "owner-b")
    );

    // Stealing with the current ETag works, then the old owner's renewal loses.
    let current = renewed[0].version.clone();
    let stolen = store
        .claim_ownership(&[claim("0", "owner-b", Some(&current))])
        .await
        .unwrap();
    assert_eq!(stolen.len(), 1);
    let late = store
        .claim_ownership(&[claim("0", "owner-a", Some(&current))])
        .await
        .unwrap();
    assert!(late.is_empty());

    // Release writes ownerid "" (the blob stays).
    let released = store
        .claim_ownership(&[claim("0", "", Some(&stolen[0].version))])
        .await
        .unwrap();
    assert_eq!(released.len(), 1);
    let listed = store.list_ownership().await.unwrap();
    let owners: Vec<_> = listed
        .iter()
        .map(|o| (o.partition_id.as_str(), o.owner_id.as_str()))
        .collect();
    assert_eq!(owners, [("0", ""), ("1", "owner-b")]);
    assert_eq!(listed[0].version, released[0].version);
    assert_recent(listed[0].last_modified);

    // A claim on a record deleted since it was read is lost, not an error.
    let gone = store
        .claim_ownership(&[claim("7", "owner-a", Some("0x8D000000000000"))])
        .await
        .unwrap();
    assert!(gone.is_empty());
}

#[tokio::test]
async fn two_instances_racing_for_one_partition_have_one_winner_per_round() {
    let azurite = Azurite::start();
    let container = container(&azurite).await;
    let stores: Vec<_> = (0..4)
        .map(|_| BlobCheckpointStore::new(container.clone(), scope(), NameCase::Lower))
        .collect();
    let mut version: Option<String> = None;
    for round in 0..10 {
        let attempts = stores.iter().enumerate().map(|(index, store)| {
            let claim = claim("0", &format!("owner-{index}"), version.as_deref());
            async move { store.claim_ownership(&[claim]).await.unwrap() }
        });
        let results = futures_util::future::join_all(attempts).await;
        let winners: Vec<_> = results.into_iter().flatten().collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        version = Some(winners[0].version.clone());
    }
}

#[tokio::test]
async fn checkpoints_round_trip_and_the_first_update_creates_the_blob() {
    let azurite = Azurite::start();
    let container = container(&azurite).await;
    let store = BlobCheckpointStore::new(container.clone(), scope(), NameCase::Lower);
    assert!(store.list_checkpoints().await.unwrap().is_empty());

    // Set Metadata gets 404 the first time; the store then creates the blob.
    store
        .update_checkpoint(&checkpoint("0", Some("1234"), Some(10)))
        .await
        .unwrap();
    store
        .update_checkpoint(&checkpoint("1", Some("5678"), Some(20)))
        .await
        .unwrap();
    store
        .update_checkpoint(&checkpoint("0", Some("2345"), Some(11)))
        .await
        .unwrap();
    store
        .update_checkpoint(&checkpoint("2", None, Some(30)))
        .await
        .unwrap();
    assert_eq!(
        store.list_checkpoints().await.unwrap(),
        [
            checkpoint("0", Some("2345"), Some(11)),
            checkpoint("1", Some("5678"), Some(20)),
            checkpoint("2", None, Some(30)),
        ]
    );

    let blob = container
        .get_properties("myns.servicebus.windows.net/hub1/$default/checkpoint/0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(blob.content_length, 0);
    assert_eq!(
        blob.metadata,
        HashMap::from([
            ("offset".to_owned(), "2345".to_owned()),
            ("sequencenumber".to_owned(), "11".to_owned()),
        ])
    );
    // An absent offset is written as "" so every SDK finds both keys.
    let blob = container
        .get_properties("myns.servicebus.windows.net/hub1/$default/checkpoint/2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(blob.metadata["offset"], "");

    // A sequence number that is not a number is reported by blob name.
    let garbage = HashMap::from([("sequencenumber".to_owned(), "ten".to_owned())]);
    container
        .set_metadata(
            "myns.servicebus.windows.net/hub1/$default/checkpoint/1",
            &garbage,
            Condition::None,
        )
        .await
        .unwrap();
    match store.list_checkpoints().await {
        Err(StoreError::InvalidRecord { name, reason }) => {
            assert_eq!(
                name,
                "myns.servicebus.windows.net/hub1/$default/checkpoint/1"
            );
            assert!(reason.contains("ten"), "{reason}");
        }
        other => panic!("expected InvalidRecord, got {other:?}"),
    }
}

#[tokio::test]
async fn blob_names_are_lower_cased_by_default_and_verbatim_on_request() {
    let azurite = Azurite::start();
    let container = container(&azurite).await;
    let scope = StoreScope {
        fully_qualified_namespace: "MyNs.servicebus.windows.net".into(),
        event_hub: "Hub1".into(),
        consumer_group: "$Default".into(),
    };
    for case in [NameCase::Lower, NameCase::Verbatim] {
        let store = BlobCheckpointStore::new(container.clone(), scope.clone(), case);
        store
            .claim_ownership(&[claim("0", "a", None)])
            .await
            .unwrap();
        store
            .update_checkpoint(&checkpoint("0", Some("1"), Some(1)))
            .await
            .unwrap();
        // Each casing sees its own records only.
        assert_eq!(store.list_ownership().await.unwrap().len(), 1);
        assert_eq!(store.list_checkpoints().await.unwrap().len(), 1);
    }
    let names: Vec<_> = container
        .list_with_metadata("")
        .await
        .unwrap()
        .into_iter()
        .map(|item| item.name)
        .collect();
    assert_eq!(
        names,
        [
            "MyNs.servicebus.windows.net/Hub1/$Default/checkpoint/0",
            "MyNs.servicebus.windows.net/Hub1/$Default/ownership/0",
            "myns.servicebus.windows.net/hub1/$default/checkpoint/0",
            "myns.servicebus.windows.net/hub1/$default/ownership/0",
        ]
    );
}

/// Claims, checkpoints and lists through `storage`, which must reach the same account.
async fn store_round_trip(storage: StorageAccount, partition_id: &str) {
    let container = BlobContainer::connect(&storage, CONTAINER, &Default::default()).unwrap();
    let store = BlobCheckpointStore::new(container, scope(), NameCase::Lower);
    let won = store
        .claim_ownership(&[claim(partition_id, "owner", None)])
        .await
        .unwrap();
    assert_eq!(won.len(), 1);
    let renewed = store
        .claim_ownership(&[claim(partition_id, "owner", Some(&won[0].version))])
        .await
        .unwrap();
    assert_eq!(renewed.len(), 1);
    store
        .update_checkpoint(&checkpoint(partition_id, Some("42"), Some(7)))
        .await
        .unwrap();
    assert!(store
        .list_ownership()
        .await
        .unwrap()
        .iter()
        .any(|o| o.partition_id == partition_id && o.owner_id == "owner"));
    assert!(store
        .list_checkpoints()
        .await
        .unwrap()
        .contains(&checkpoint(partition_id, Some("42"), Some(7))));
}

#[tokio::test]
async fn account_key_sas_connection_string_and_container_sas_url_all_work() {
    let azurite = Azurite::start();
    container(&azurite).await;
    store_round_trip(connection_string(azurite.connection_string()), "0").await;
    store_round_trip(connection_string(azurite.sas_connection_string()), "1").await;
    store_round_trip(
        StorageAccount::ContainerUrl(Secret::new(azurite.container_sas_url(CONTAINER))),
        "2",
    )
    .await;
}

#[tokio::test]
async fn a_wrong_key_or_signature_is_refused_and_never_shown() {
    let azurite = Azurite::start();
    container(&azurite).await;
    let wrong_key = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk=";
    let wrong_sas_url = azurite
        .container_sas_url(CONTAINER)
        .replace("&sig=", "&sig=AAAA");
    let signature = wrong_sas_url.rsplit("sig=").next().unwrap().to_owned();
    for (storage, secret) in [
        (
            connection_string(azurite.connection_string_with_key(wrong_key)),
            wrong_key.to_owned(),
        ),
        (
            StorageAccount::ContainerUrl(Secret::new(wrong_sas_url.clone())),
            signature,
        ),
    ] {
        let container = BlobContainer::connect(&storage, CONTAINER, &Default::default()).unwrap();
        let store = BlobCheckpointStore::new(container.clone(), scope(), NameCase::Lower);
        let listed = store.list_ownership().await;
        let Err(StoreError::Refused { reason }) = &listed else {
            panic!("expected Refused, got {listed:?}");
        };
        assert!(reason.contains("403"), "{reason}");
        let claimed = store.claim_ownership(&[claim("0", "a", None)]).await;
        assert!(
            matches!(claimed, Err(StoreError::Refused { .. })),
            "{claimed:?}"
        );
        let raw = container.get_properties("any").await.unwrap_err();
        assert!(matches!(raw, StorageError::Refused { .. }), "{raw:?}");
        for shown in [
            format!("{listed:?}"),
            format!("{claimed:?}"),
            format!("{raw:?}"),
            raw.to_string(),
            format!("{container:?}"),
        ] {
            assert!(!shown.contains(&secret), "secret shown: {shown}");
        }
    }
}

#[tokio::test]
async fn a_missing_container_is_refused_not_a_lost_claim() {
    let azurite = Azurite::start();
    let storage = connection_string(azurite.connection_string());
    let container =
        BlobContainer::connect(&storage, "no-such-container", &Default::default()).unwrap();
    let store = BlobCheckpointStore::new(container, scope(), NameCase::Lower);
    let claimed = store.claim_ownership(&[claim("0", "a", None)]).await;
    assert!(
        matches!(claimed, Err(StoreError::Refused { .. })),
        "{claimed:?}"
    );
    let listed = store.list_ownership().await;
    assert!(
        matches!(listed, Err(StoreError::Refused { .. })),
        "{listed:?}"
    );
    let updated = store
        .update_checkpoint(&checkpoint("0", None, Some(1)))
        .await;
    let Err(StoreError::Refused { reason }) = updated else {
        panic!("expected Refused, got {updated:?}");
    };
    assert!(reason.contains("ContainerNotFound"), "{reason}");
}

#[tokio::test]
async fn a_stopped_endpoint_is_unavailable_within_seconds_and_recovers_on_restart() {
    let mut azurite = Azurite::start();
    let container = container(&azurite).await;
    let store = BlobCheckpointStore::new(container.clone(), scope(), NameCase::Lower);
    store
        .update_checkpoint(&checkpoint("0", Some("1"), Some(1)))
        .await
        .unwrap();

    azurite.stop();
    let started = Instant::now();
    let listed = store.list_ownership().await;
    let elapsed = started.elapsed();
    let Err(StoreError::Unavailable { reason, .. }) = &listed else {
        panic!("expected Unavailable, got {listed:?}");
    };
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(!reason.contains("sig="), "{reason}");
    let claimed = store.claim_ownership(&[claim("0", "a", None)]).await;
    assert!(
        matches!(claimed, Err(StoreError::Unavailable { .. })),
        "{claimed:?}"
    );
    let updated = store
        .update_checkpoint(&checkpoint("0", Some("2"), Some(2)))
        .await;
    assert!(
        matches!(updated, Err(StoreError::Unavailable { .. })),
        "{updated:?}"
    );
    let raw = container.get_properties("x").await.unwrap_err();
    assert!(raw.is_transient(), "{raw:?}");

    azurite.restart();
    assert_eq!(
        store.list_checkpoints().await.unwrap(),
        [checkpoint("0", Some("1"), Some(1))]
    );
}

#[tokio::test]
async fn staged_blocks_commit_once_and_a_committed_blob_is_never_replaced() {
    let azurite = Azurite::start();
    let container = container(&azurite).await;
    let name = "myns/hub1/0/2024/01/02/03/04/05.avro";
    assert_eq!(container.get_properties(name).await.unwrap(), None);

    let blocks = [
        (b"block-00".to_vec(), "first "),
        (b"block-01".to_vec(), "second"),
    ];
    for (id, content) in &blocks {
        container
            .stage_block(name, id, Bytes::from_static(content.as_bytes()))
            .await
            .unwrap();
    }
    let ids: Vec<_> = blocks.iter().map(|(id, _)| id.clone()).collect();
    let metadata = HashMap::from([("events".to_owned(), "2".to_owned())]);
    let written = container
        .commit_block_list(name, &ids, &metadata, Condition::IfNoneMatchAny)
        .await
        .unwrap();
    let properties = container.get_properties(name).await.unwrap().unwrap();
    assert_eq!(properties.content_length, 12);
    assert_eq!(properties.metadata, metadata);
    assert_eq!(properties.etag, written.etag);
    assert_eq!(container.download(name).await.unwrap(), b"first second");

    // Another window's blocks for the same name cannot replace it.
    container
        .stage_block(name, b"block-02", Bytes::from_static(b"other"))
        .await
        .unwrap();
    let replaced = container
        .commit_block_list(
            name,
            &[b"block-02".to_vec()],
            &metadata,
            Condition::IfNoneMatchAny,
        )
        .await;
    assert!(
        matches!(
            replaced,
            Err(StorageError::AlreadyExists { .. } | StorageError::ConditionNotMet { .. })
        ),
        "{replaced:?}"
    );
    assert_eq!(container.download(name).await.unwrap(), b"first second");

    // A one-shot upload is create-only the same way.
    let again = container
        .upload(
            name,
            Bytes::from_static(b"x"),
            &metadata,
            Condition::IfNoneMatchAny,
        )
        .await;
    assert!(
        matches!(again, Err(StorageError::AlreadyExists { .. })),
        "{again:?}"
    );
}

/// hubcap's own checkpoint writes are compare-and-swaps on the blob's ETag: a create loses to an
/// existing blob, a stale ETag loses to any write since (an SDK processor's unconditional one
/// included), and the winner's keys sit beside the SDKs' where the Python store reads them.
#[tokio::test]
async fn checkpoint_swaps_follow_the_etag_and_keep_hubcaps_key_beside_the_sdks() {
    let azurite = Azurite::start();
    let container = container(&azurite).await;
    let store = BlobCheckpointStore::new(container.clone(), scope(), NameCase::Lower);
    let blob = "myns.servicebus.windows.net/hub1/$default/checkpoint/0";
    let mut first = checkpoint("0", Some("100"), Some(1));
    first.committed_in = Some("ns/hub1/0/2026/12/02/01 00.avro".into());
    let created = store
        .swap_checkpoint(&first, None)
        .await
        .unwrap()
        .expect("created");
    // A create finding a record that holds exactly what it writes takes it for its own write
    // (a retry after a try that landed); one that holds anything else is another writer's.
    assert_eq!(
        store.swap_checkpoint(&first, None).await.unwrap(),
        Some(created.clone())
    );
    let mut other = first.clone();
    other.sequence_number = Some(2);
    assert_eq!(store.swap_checkpoint(&other, None).await.unwrap(), None);
    let second = checkpoint("0", Some("200"), Some(2));
    let swapped = store
        .swap_checkpoint(&second, Some(&created))
        .await
        .unwrap()
        .expect("swapped");
    // An unconditional write, as the SDK processors make, moves the ETag on.
    store
        .update_checkpoint(&checkpoint("0", Some("300"), Some(3)))
        .await
        .unwrap();
    assert_eq!(
        store
            .swap_checkpoint(&second, Some(&swapped))
            .await
            .unwrap(),
        None
    );
    let versions = store.list_checkpoint_versions().await.unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].0.sequence_number, Some(3));
    let properties = container.get_properties(blob).await.unwrap().unwrap();
    assert_eq!(properties.etag, versions[0].1);
    // The record's write time is the blob's Last-Modified (what `hubcap status` shows).
    let records = store.list_checkpoint_records().await.unwrap();
    assert_eq!(records[0].last_modified, Some(properties.last_modified));

    let mut named = checkpoint("0", Some("400"), Some(4));
    named.committed_in = first.committed_in.clone();
    store
        .swap_checkpoint(&named, Some(&versions[0].1))
        .await
        .unwrap()
        .expect("swapped");
    let metadata = container
        .get_properties(blob)
        .await
        .unwrap()
        .unwrap()
        .metadata;
    assert_eq!(metadata["offset"], "400");
    assert_eq!(metadata["sequencenumber"], "4");
    assert_eq!(
        metadata["hubcapcommitted"],
        "ns/hub1/0/2026/12/02/01%2000.avro"
    );
    assert_eq!(
        store.list_checkpoints().await.unwrap()[0].committed_in,
        first.committed_in
    );
}
