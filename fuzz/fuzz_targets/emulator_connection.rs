//! A whole client byte stream fed to the emulator's connection handling over loopback TCP:
//! the frame guard, fe2o3's SASL and AMQP layers, and the emulator's $cbs, $management,
//! consumer and producer links behind them. One emulator (hub `h`, partitions 0 and 1 with
//! events in them, SAS key `k`) serves every input; each input is one connection, written
//! whole and then half-closed.
//!
//! What it checks: no input panics the emulator (libFuzzer's panic hook aborts on a panic in
//! any thread, the emulator's tasks included), every connection ends once its client stops
//! sending, and afterwards the emulator still accepts a connection and answers its protocol
//! header.
//!
//! The seeds are what the Python SDK sent to the emulator while it published, read hub and
//! partition properties and received (`fuzz/seeds/emulator_connection`); their SAS tokens are
//! signed with key `k` = `c2VjcmV0` for `sb://127.0.0.1/` and expire in 2100, so replayed they
//! get past `$cbs` into the links.
#![no_main]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hubcap_emulator::config::{HubConfig, SasKeyConfig};
use hubcap_emulator::{Emulator, EmulatorConfig};
use libfuzzer_sys::fuzz_target;

/// How long a connection may stay open after its client half-closed: the emulator must notice
/// the end of its input and close well within this.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

fn emulator() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let config = EmulatorConfig {
                    listen: "127.0.0.1:0".parse().unwrap(),
                    hubs: vec![HubConfig {
                        name: "h".into(),
                        partitions: 2,
                    }],
                    sas_keys: vec![SasKeyConfig {
                        name: "k".into(),
                        key: "c2VjcmV0".into(),
                    }],
                    // Inputs publish: keep the store small whatever they send.
                    retention_events: Some(1000),
                    ..EmulatorConfig::default()
                };
                let emulator = Emulator::start(config).await.expect("the emulator starts");
                let hub = emulator.namespace().hub("h").expect("hub h").clone();
                for partition in &hub.partitions {
                    partition.preload(20, 64).expect("preload");
                }
                sender.send(emulator.amqp_addr()).unwrap();
                std::future::pending::<()>().await;
            });
        });
        receiver.recv().expect("the emulator's address")
    })
}

/// Writes `bytes` on a new connection, half-closes it and reads until the emulator closes.
fn converse(addr: SocketAddr, bytes: &[u8]) {
    let mut stream = TcpStream::connect(addr).expect("the emulator accepts connections");
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // The emulator may refuse and close before everything is written: that is an answer.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + CLOSE_DEADLINE;
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return, // reset by the emulator
        }
        assert!(
            Instant::now() < deadline,
            "the connection stayed open {CLOSE_DEADLINE:?} after the client stopped sending"
        );
    }
}

/// The emulator still serves: a fresh connection's SASL protocol header is answered with one.
fn assert_still_serving(addr: SocketAddr) {
    let mut stream = TcpStream::connect(addr).expect("the emulator still accepts connections");
    stream.set_read_timeout(Some(CLOSE_DEADLINE)).unwrap();
    stream.write_all(b"AMQP\x03\x01\x00\x00").unwrap();
    let mut header = [0u8; 8];
    stream
        .read_exact(&mut header)
        .expect("the emulator answers a protocol header");
    assert_eq!(
        &header, b"AMQP\x03\x01\x00\x00",
        "the emulator's SASL header"
    );
}

fuzz_target!(|bytes: &[u8]| {
    let addr = emulator();
    converse(addr, bytes);
    assert_still_serving(addr);
});
