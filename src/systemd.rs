//! systemd service integration without libsystemd: the `sd_notify(3)` datagram protocol.
//!
//! Under a `Type=notify` unit systemd passes the path of a Unix datagram socket in
//! `NOTIFY_SOCKET` (a leading `@` names a Linux abstract socket) and, with `WatchdogSec=`, the
//! watchdog period in `WATCHDOG_USEC` (and the process it is meant for in `WATCHDOG_PID`). Each
//! notification is one datagram of newline-separated `KEY=VALUE` assignments.
//!
//! Every function here is a no-op when `NOTIFY_SOCKET` is unset, so the same binary runs under
//! systemd, in a container or in a terminal. A notification that cannot be delivered is logged
//! and otherwise ignored: systemd notices a missing `READY=1` or watchdog ping on its own (start
//! timeout, watchdog timeout), and failing the daemon over it would only lose the drain.
//!
//! The daemon's lifecycle maps onto it so: [`notify_ready`] once the HTTP endpoint listens and
//! the supervisor runs; [`notify_stopping`] when a drain starts; [`run_watchdog`] as a tracked
//! task whose stop token is cancelled last, so the pings go on through the drain (systemd stops
//! enforcing the watchdog once it knows the service is stopping).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Environment variable holding the notification socket's address.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// Environment variable holding the watchdog period in microseconds.
const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// Environment variable naming the process the watchdog period is meant for.
const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// A send to systemd never blocks the caller for longer than this: the socket's queue is
/// drained by PID 1, which only stalls when the whole machine does.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Tells systemd that start-up has finished (`READY=1`): with `Type=notify`, `systemctl start`
/// returns and units ordered after hubcap start only now.
pub fn notify_ready() {
    notify("READY=1");
}

/// Tells systemd that hubcap is draining (`STOPPING=1`), so a stop it did not ask for (a
/// signal from elsewhere) is shown as "deactivating" rather than as a failure.
pub fn notify_stopping() {
    notify("STOPPING=1");
}

/// Sets the one-line status that `systemctl status hubcap` shows (`STATUS=...`).
pub fn notify_status(status: &str) {
    notify(&status_assignment(status));
}

/// How often to ping the watchdog: half the period systemd set (`WatchdogSec=`), as
/// `sd_watchdog_enabled(3)` recommends, so one late ping does not kill the service. `None`
/// when the watchdog is off or the period is meant for another process.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var(WATCHDOG_USEC).ok().as_deref(),
        std::env::var(WATCHDOG_PID).ok().as_deref(),
        std::process::id(),
    )
}

/// Pings the systemd watchdog (`WATCHDOG=1`) every `interval` while `health_check` passes,
/// until `stop` is cancelled. A failing check withholds the ping, so systemd restarts a daemon
/// that is alive but stuck; the check must therefore be cheap and must not block. Returns at
/// once when hubcap is not under systemd.
pub async fn run_watchdog(
    interval: Duration,
    health_check: impl Fn() -> bool,
    stop: CancellationToken,
) {
    let Some(socket) = NotifySocket::from_env() else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    // After a stall, one ping, not a burst: the point of the ping is "alive now".
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let passed = health_check();
        match (healthy, passed) {
            (true, false) => {
                warn!(
                    event = "watchdog_withheld",
                    "health check failed: withholding the watchdog ping"
                );
            }
            (false, true) => {
                info!(
                    event = "watchdog_resumed",
                    "health check passes again: resuming watchdog pings"
                );
            }
            _ => {}
        }
        healthy = passed;
        if passed {
            socket.send_logged("WATCHDOG=1");
        }
    }
}

/// Sends one notification if hubcap runs under systemd.
fn notify(state: &str) {
    if let Some(socket) = NotifySocket::from_env() {
        socket.send_logged(state);
    }
}

/// `STATUS=` with the text on one line: a newline would start a new assignment.
fn status_assignment(status: &str) -> String {
    let line: String = status
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("STATUS={line}")
}

fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    // systemd sets WATCHDOG_PID to the main process; a child that inherited the environment
    // must not ping on its behalf.
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec) / 2)
}

/// Where notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NotifySocket {
    /// A socket in the file system (`/run/systemd/notify`).
    Path(PathBuf),
    /// A Linux abstract socket: the name after the `@`.
    Abstract(Vec<u8>),
}

impl NotifySocket {
    fn from_env() -> Option<Self> {
        let value = std::env::var_os(NOTIFY_SOCKET)?;
        match Self::parse(value.as_encoded_bytes()) {
            Ok(socket) => socket,
            Err(error) => {
                warn!(error = %error, "ignoring NOTIFY_SOCKET");
                None
            }
        }
    }

    /// `Ok(None)` for an empty value, which systemd treats as unset.
    fn parse(value: &[u8]) -> Result<Option<Self>, String> {
        match value.first() {
            None => Ok(None),
            Some(b'@') => Ok(Some(Self::Abstract(value[1..].to_vec()))),
            Some(b'/') => {
                let path = std::str::from_utf8(value)
                    .map_err(|_| "the socket path is not UTF-8".to_owned())?;
                Ok(Some(Self::Path(PathBuf::from(path))))
            }
            Some(_) => Err("neither an absolute path nor an abstract socket name (@...)".into()),
        }
    }

    fn send_logged(&self, state: &str) {
        match self.send(state) {
            Ok(()) => debug!(state, "notified systemd"),
            Err(error) => warn!(state, error = %error, "cannot notify systemd"),
        }
    }

    fn send(&self, state: &str) -> io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        let sent = match self {
            Self::Path(path) => socket.send_to(state.as_bytes(), path)?,
            Self::Abstract(name) => send_abstract(&socket, name, state.as_bytes())?,
        };
        if sent != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the notification was truncated",
            ));
        }
        Ok(())
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(socket: &UnixDatagram, name: &[u8], payload: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(payload, &address)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_socket: &UnixDatagram, _name: &[u8], _payload: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Tests that set NOTIFY_SOCKET hold this for as long as the variable is set: the process
    /// environment is shared by every test thread. A tokio mutex because the watchdog test holds
    /// it across awaits; the synchronous tests take it with `blocking_lock`.
    static ENV_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// Sets NOTIFY_SOCKET for the life of the guard.
    struct NotifySocketVar;

    impl NotifySocketVar {
        fn set(value: &str) -> Self {
            std::env::set_var(NOTIFY_SOCKET, value);
            NotifySocketVar
        }
    }

    impl Drop for NotifySocketVar {
        fn drop(&mut self) {
            std::env::remove_var(NOTIFY_SOCKET);
        }
    }

    /// A stand-in for systemd's notification socket, bound in a temporary directory.
    fn systemd_socket() -> (tempfile::TempDir, UnixDatagram, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notification socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let address = path.to_str().expect("utf-8 temp path").to_owned();
        (dir, socket, address)
    }

    fn receive(socket: &UnixDatagram) -> String {
        let mut buffer = [0u8; 4096];
        let length = socket.recv(&mut buffer).expect("a notification");
        String::from_utf8(buffer[..length].to_vec()).expect("utf-8 notification")
    }

    fn pending(socket: &UnixDatagram) -> Vec<String> {
        socket.set_nonblocking(true).expect("nonblocking");
        let mut datagrams = Vec::new();
        let mut buffer = [0u8; 4096];
        while let Ok(length) = socket.recv(&mut buffer) {
            datagrams.push(String::from_utf8_lossy(&buffer[..length]).into_owned());
        }
        datagrams
    }

    #[test]
    fn ready_stopping_and_status_reach_the_notification_socket() {
        let _lock = ENV_LOCK.blocking_lock();
        let (_dir, systemd, address) = systemd_socket();
        let _var = NotifySocketVar::set(&address);

        notify_ready();
        notify_status("draining 4 partitions");
        notify_stopping();

        assert_eq!(receive(&systemd), "READY=1");
        assert_eq!(receive(&systemd), "STATUS=draining 4 partitions");
        assert_eq!(receive(&systemd), "STOPPING=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_abstract_socket_named_with_an_at_sign_receives_notifications() {
        use std::os::linux::net::SocketAddrExt;
        let _lock = ENV_LOCK.blocking_lock();
        let name = format!(
            "hubcap-test-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        );
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract address");
        let systemd = UnixDatagram::bind_addr(&address).expect("bind the abstract socket");
        systemd
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let _var = NotifySocketVar::set(&format!("@{name}"));

        notify_ready();

        assert_eq!(receive(&systemd), "READY=1");
    }

    #[test]
    fn a_multi_line_status_is_sent_as_one_assignment() {
        let _lock = ENV_LOCK.blocking_lock();
        let (_dir, systemd, address) = systemd_socket();
        let _var = NotifySocketVar::set(&address);

        notify_status("claimed 2\nREADY=1\r\nreleased 1");

        assert_eq!(receive(&systemd), "STATUS=claimed 2 READY=1  released 1");
    }

    #[test]
    fn without_notify_socket_every_call_is_a_no_op() {
        let _lock = ENV_LOCK.blocking_lock();
        std::env::remove_var(NOTIFY_SOCKET);

        notify_ready();
        notify_status("running");
        notify_stopping();
    }

    #[test]
    fn a_notify_socket_nobody_listens_on_is_logged_not_fatal() {
        let _lock = ENV_LOCK.blocking_lock();
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("gone");
        let _var = NotifySocketVar::set(missing.to_str().expect("utf-8 temp path"));

        notify_ready();
        notify_stopping();
    }

    #[test]
    fn notify_socket_values_are_paths_abstract_names_or_unset() {
        assert_eq!(NotifySocket::parse(b""), Ok(None));
        assert_eq!(
            NotifySocket::parse(b"/run/systemd/notify"),
            Ok(Some(NotifySocket::Path("/run/systemd/notify".into())))
        );
        assert_eq!(
            NotifySocket::parse(b"@/org/freedesktop/systemd1/notify/42"),
            Ok(Some(NotifySocket::Abstract(
                b"/org/freedesktop/systemd1/notify/42".to_vec()
            )))
        );
        assert!(NotifySocket::parse(b"run/systemd/notify").is_err());
    }

    #[test]
    fn the_watchdog_pings_at_half_the_period_systemd_set() {
        let interval = watchdog_interval_from(Some("30000000"), None, 7);
        assert_eq!(interval, Some(Duration::from_secs(15)));
        let interval = watchdog_interval_from(Some("30000000"), Some("7"), 7);
        assert_eq!(interval, Some(Duration::from_secs(15)));
        let interval = watchdog_interval_from(Some("1"), None, 7);
        assert_eq!(interval, Some(Duration::from_nanos(500)));
    }

    #[test]
    fn the_watchdog_is_off_when_unset_zero_malformed_or_meant_for_another_process() {
        assert_eq!(watchdog_interval_from(None, None, 7), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("30s"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("-5"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("x"), 7), None);
    }

    #[test]
    fn watchdog_interval_reads_the_environment() {
        let _lock = ENV_LOCK.blocking_lock();
        std::env::set_var(WATCHDOG_USEC, "20000000");
        std::env::set_var(WATCHDOG_PID, std::process::id().to_string());
        let interval = watchdog_interval();
        std::env::remove_var(WATCHDOG_USEC);
        std::env::remove_var(WATCHDOG_PID);

        assert_eq!(interval, Some(Duration::from_secs(10)));
        assert_eq!(watchdog_interval(), None);
    }

    #[tokio::test]
    async fn the_watchdog_pings_only_while_the_health_check_passes() {
        let _lock = ENV_LOCK.lock().await;
        let (_dir, systemd, address) = systemd_socket();
        let _var = NotifySocketVar::set(&address);
        let checks = Arc::new(AtomicUsize::new(0));
        let passed = Arc::new(AtomicUsize::new(0));
        // Unhealthy for the first three checks, healthy afterwards.
        let health_check = {
            let (checks, passed) = (checks.clone(), passed.clone());
            move || {
                let healthy = checks.fetch_add(1, Ordering::SeqCst) >= 3;
                if healthy {
                    passed.fetch_add(1, Ordering::SeqCst);
                }
                healthy
            }
        };
        let stop = CancellationToken::new();
        let watchdog = tokio::spawn(run_watchdog(
            Duration::from_millis(5),
            health_check,
            stop.clone(),
        ));

        let first_two = tokio::task::spawn_blocking(move || {
            let pings = [receive(&systemd), receive(&systemd)];
            (systemd, pings)
        });
        let (systemd, first_two) = first_two.await.expect("receiver");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), watchdog)
            .await
            .expect("the watchdog stops when cancelled")
            .expect("the watchdog task does not panic");

        assert_eq!(first_two, ["WATCHDOG=1", "WATCHDOG=1"]);
        let later = pending(&systemd);
        assert!(later.iter().all(|ping| ping == "WATCHDOG=1"), "{later:?}");
        assert!(checks.load(Ordering::SeqCst) >= 5);
        assert_eq!(2 + later.len(), passed.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn the_watchdog_returns_at_once_without_systemd() {
        let _lock = ENV_LOCK.lock().await;
        std::env::remove_var(NOTIFY_SOCKET);
        let stop = CancellationToken::new();

        tokio::time::timeout(
            Duration::from_secs(5),
            run_watchdog(Duration::from_millis(1), || true, stop),
        )
        .await
        .expect("no socket: nothing to ping");
    }
}
