//! amqps: the emulator serving TLS first (no AMQP TLS header), as the SDKs connect to port 5671.

mod common;

use std::sync::Arc;

use common::*;
use hubcap_emulator::config::TlsConfig;
use hubcap_emulator::{Emulator, EmulatorConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::CertificateDer;
use tempfile::TempDir;

/// A test CA and an emulator serving a leaf it signed for localhost and 127.0.0.1.
struct TlsEmulator {
    emulator: Emulator,
    ca: CertificateDer<'static>,
    /// Holds the PEM files for as long as the emulator may read them.
    _files: TempDir,
}

fn certificate_authority() -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("a CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "hubcap emulator test CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let certificate = params.self_signed(&key).expect("a self-signed CA");
    (certificate, key)
}

async fn start_tls() -> TlsEmulator {
    let (ca, ca_key) = certificate_authority();
    let leaf_key = KeyPair::generate().expect("a leaf key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf params");
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = params
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("a leaf signed by the CA");

    let files = tempfile::tempdir().expect("a temporary directory");
    let cert = files.path().join("cert.pem");
    let key = files.path().join("key.pem");
    std::fs::write(&cert, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    let emulator = start(EmulatorConfig {
        tls: Some(TlsConfig { cert, key }),
        ..config()
    })
    .await;
    TlsEmulator {
        emulator,
        ca: ca.der().clone(),
        _files: files,
    }
}

fn connector(trusted: &[CertificateDer<'static>]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in trusted {
        roots.add(certificate.clone()).expect("a usable root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amqps_client_that_trusts_the_ca_gets_a_full_round_trip() {
    let tls = start_tls().await;
    let emulator = &tls.emulator;
    assert!(!emulator
        .connection_string(Some(HUB))
        .contains("UseDevelopmentEmulator"));
    preload(emulator, 0, 1, 256);

    let mut client = Client::connect_tls(emulator, connector(std::slice::from_ref(&tls.ca)))
        .await
        .expect("a TLS client connects");
    client.put_sas_token(emulator, HUB).await;
    let hub = client.hub_properties(emulator, HUB).await;
    assert_eq!(hub.partition_count, 4);
    let mut receiver = client.receiver(&ReceiverOptions::partition("0")).await;
    let event = next_event(&mut receiver).await;
    assert_eq!(event.sequence_number, 0);
    assert_eq!(event.data().len(), 256);

    let mut sender = client.sender(&format!("{HUB}/Partitions/0")).await;
    publish(&mut sender, event_message(b"over tls")).await;
    assert_eq!(next_event(&mut receiver).await.data(), b"over tls");
    client.close().await;
    tls.emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_do_not_speak_trusted_tls_are_turned_away() {
    let tls = start_tls().await;
    let emulator = &tls.emulator;

    let (other_ca, _) = certificate_authority();
    let untrusting = Client::connect_tls(emulator, connector(&[other_ca.der().clone()])).await;
    assert!(
        untrusting.is_err(),
        "a client trusting another CA connected"
    );
    let plain = Client::try_connect(emulator).await;
    assert!(
        plain.is_err(),
        "a plain AMQP client connected to the TLS port"
    );

    let client = Client::connect_tls(emulator, connector(std::slice::from_ref(&tls.ca)))
        .await
        .expect("a trusting TLS client still connects");
    client.close().await;
    tls.emulator.shutdown().await;
}
