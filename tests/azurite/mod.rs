//! A real Azurite blob service for integration tests, one per test, on a free loopback port.
//!
//! Uses `node_modules/.bin/azurite-blob` (`npm ci` installs it) or `$AZURITE_BIN`. Data lives in
//! a temporary directory that outlives [`Azurite::stop`], so [`Azurite::restart`] brings the
//! same account back on the same port: outage tests stop it and start it again.
//!
//! Also signs the SAS tokens tests need (an account SAS and a container service SAS) with the
//! well-known development key.
#![allow(dead_code)]

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The development account every Azurite serves.
pub const ACCOUNT: &str = "devstoreaccount1";
/// Its key, public in Azurite's README.
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// SAS service version the helpers sign for.
const SAS_VERSION: &str = "2021-08-06";
/// SAS expiry far enough away for any test run.
const SAS_EXPIRY: &str = "2099-01-01T00:00:00Z";
/// How long Azurite may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long Azurite gets to exit on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running (or stopped) Azurite blob service; dropping it stops the process.
pub struct Azurite {
    /// The node process, while running.
    child: Option<Child>,
    /// The loopback port it listens on, kept across restarts.
    port: u16,
    /// Holds `data/` (Azurite's `--location`) and `azurite.log` (its stdout and stderr).
    dir: tempfile::TempDir,
}

impl Azurite {
    /// Starts Azurite on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("no free loopback port")
            .port();
        let dir = tempfile::tempdir().expect("cannot create a temp dir for Azurite");
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let mut azurite = Self {
            child: None,
            port,
            dir,
        };
        azurite.launch();
        azurite
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// A connection string with the development account's key.
    pub fn connection_string(&self) -> String {
        self.connection_string_with_key(ACCOUNT_KEY)
    }

    /// A connection string for the development account with another key (to test refusals).
    pub fn connection_string_with_key(&self, key: &str) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};BlobEndpoint={};",
            self.blob_endpoint()
        )
    }

    /// A connection string carrying an account SAS (blob service, all resource types).
    pub fn sas_connection_string(&self) -> String {
        format!(
            "BlobEndpoint={};SharedAccessSignature={}",
            self.blob_endpoint(),
            account_sas()
        )
    }

    /// A container URL with a service SAS for `container`.
    pub fn container_sas_url(&self, container: &str) -> String {
        format!(
            "{}/{container}?{}",
            self.blob_endpoint(),
            container_sas(container)
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the process: SIGTERM, up to five seconds, then SIGKILL (Azurite sometimes
    /// reports itself closed and keeps running).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops (if running) and starts again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn launch(&mut self) {
        let bin = azurite_bin();
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(self.port.to_string())
            .arg("--location")
            .arg(self.dir.path().join("data"))
            .args(["--skipApiVersionCheck", "--disableTelemetry", "--silent"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", bin.display()));
        self.child = Some(child);

        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let started = Instant::now();
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "Azurite exited with {status} before listening on {address}; its log:\n{}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            if started.elapsed() > START_DEADLINE {
                self.stop();
                panic!(
                    "Azurite did not listen on {address} within {START_DEADLINE:?}; its log:\n{}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("azurite.log")
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `$AZURITE_BIN`, else the repository's `node_modules/.bin/azurite-blob`.
fn azurite_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("AZURITE_BIN") {
        return PathBuf::from(bin);
    }
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules/.bin/azurite-blob");
    assert!(
        bin.exists(),
        "{} is missing: run `npm ci` in the repository root to install Azurite (or set \
         AZURITE_BIN)",
        bin.display()
    );
    bin
}

fn sign(string_to_sign: &str) -> String {
    let key = BASE64.decode(ACCOUNT_KEY).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(string_to_sign.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// Percent-encodes a SAS value for the query string.
fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// An account SAS for the blob service: service, container and object operations.
pub fn account_sas() -> String {
    let (permissions, services, resource_types, protocol) = ("rwdlacup", "b", "sco", "https,http");
    let string_to_sign = [
        ACCOUNT,
        permissions,
        services,
        resource_types,
        "",
        SAS_EXPIRY,
        "",
        protocol,
        SAS_VERSION,
        "",
        "",
    ]
    .join("\n");
    format!(
        "sv={SAS_VERSION}&ss={services}&srt={resource_types}&sp={permissions}&se={}&spr={}&sig={}",
        encode(SAS_EXPIRY),
        encode(protocol),
        encode(&sign(&string_to_sign))
    )
}

/// A service SAS for one container (`sr=c`) with read, add, create, write, delete and list.
pub fn container_sas(container: &str) -> String {
    let (permissions, protocol) = ("racwdl", "https,http");
    let resource = format!("/blob/{ACCOUNT}/{container}");
    let string_to_sign = [
        permissions,
        "",
        SAS_EXPIRY,
        &resource,
        "",
        "",
        protocol,
        SAS_VERSION,
        "c",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ]
    .join("\n");
    format!(
        "sv={SAS_VERSION}&sr=c&sp={permissions}&se={}&spr={}&sig={}",
        encode(SAS_EXPIRY),
        encode(protocol),
        encode(&sign(&string_to_sign))
    )
}
