//! One recovery policy: every error that crosses a layer boundary maps to one [`Recovery`], and
//! one [`Retry`] (capped exponential backoff with full jitter) paces every retry loop.
//!
//! | layer | error | recovery | what the partition does |
//! |---|---|---|---|
//! | Event Hubs | connection lost, connect failed, timeout | `Reconnect` | back off, reconnect, re-attach after the last received event |
//! | Event Hubs | link detached, server busy, any other condition | `Retry` | back off, re-attach after the last received event |
//! | Event Hubs | `amqp:link:stolen` | `PartitionLost` | abandon the open window, never checkpoint again |
//! | Event Hubs | start position out of range | `Reread` | read again from the earliest retained event |
//! | Event Hubs | unauthorized, hub or consumer group not found, bad settings | `Fatal` | the process stops with the error |
//! | sink | write or commit failed (no space, permission, storage unavailable) | `Retry` | partition failing: `/readyz` false, counted, the commit retried, nothing checkpointed |
//! | sink | the window cannot be finished | `Reread` | back off, read the window's events again from its first one |
//! | checkpoint store | unavailable, or refused (permissions) | `Retry` | partition failing: the checkpoint retried, nothing more received until it is written |
//! | ownership | compare-and-swap lost (stolen, expired and claimed) | `PartitionLost` | as a stolen link |
//! | start | config or credential error | `Fatal` | `hubcap run` exits before claiming anything |
//!
//! The storage client retries single requests itself (a few quick attempts inside one call);
//! the loops here decide what happens when a whole operation has failed.

use std::future::Future;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What to do after an error; see the module's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Transient: back off and try the same thing again.
    Retry,
    /// The connection is gone: back off, reconnect, try again.
    Reconnect,
    /// What was read is not usable (a dropped window, a start position that does not exist):
    /// read it again from an earlier position.
    Reread,
    /// Another reader owns the partition now: stop it without another checkpoint.
    PartitionLost,
    /// Retrying cannot help: stop with a clear message.
    Fatal,
}

/// Capped exponential backoff with full jitter: the one retry delay used everywhere.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay: uniformly random in `[min, min(max, min * 2^attempt)]`. Full jitter keeps
    /// many partitions that failed together from retrying together.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self
            .min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        if ceiling <= self.min {
            return self.min;
        }
        let span = (ceiling - self.min).as_millis() as u64;
        self.min + Duration::from_millis(rng.gen_range(0..=span))
    }

    /// Called after a success: the next failure starts from `min` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A retry loop's state: its backoff and its own random source.
#[derive(Debug)]
pub struct Retry {
    backoff: Backoff,
    rng: StdRng,
}

impl Retry {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            backoff: Backoff::new(min, max),
            rng: StdRng::from_entropy(),
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.backoff.next_delay(&mut self.rng)
    }

    /// Called after a success: the next failure waits the shortest delay again.
    pub fn reset(&mut self) {
        self.backoff.reset();
    }

    /// Waits the next delay, unless `interrupt` completes first (its output is returned).
    pub async fn pause<T>(&mut self, interrupt: impl Future<Output = T>) -> Option<T> {
        self.pause_at_least(None, interrupt).await
    }

    /// As [`Retry::pause`], but at least `asked` when the service said how long to wait
    /// (`Retry-After`): the backoff still grows, the service's word is a floor.
    pub async fn pause_at_least<T>(
        &mut self,
        asked: Option<Duration>,
        interrupt: impl Future<Output = T>,
    ) -> Option<T> {
        let delay = self.next_delay().max(asked.unwrap_or_default());
        tokio::select! {
            _ = tokio::time::sleep(delay) => None,
            interrupted = interrupt => Some(interrupted),
        }
    }

    /// Runs `attempt` until it succeeds, backing off between failures. An error whose
    /// `recovery` is not `Retry` or `Reconnect` ends the loop with that error; `interrupt`
    /// ends it with `None` while it waits. `on_retry` sees each error that is retried.
    pub async fn run<T, E, Fut>(
        &mut self,
        attempt: impl FnMut() -> Fut,
        recovery: impl Fn(&E) -> Recovery,
        on_retry: impl FnMut(&E),
        interrupt: impl Future<Output = ()>,
    ) -> Option<Result<T, E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_asked(attempt, recovery, |_| None, on_retry, interrupt)
            .await
    }

    /// As [`Retry::run`], waiting at least what `asked` says an error asked for.
    pub async fn run_asked<T, E, Fut>(
        &mut self,
        mut attempt: impl FnMut() -> Fut,
        recovery: impl Fn(&E) -> Recovery,
        asked: impl Fn(&E) -> Option<Duration>,
        mut on_retry: impl FnMut(&E),
        interrupt: impl Future<Output = ()>,
    ) -> Option<Result<T, E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let mut interrupt = std::pin::pin!(interrupt);
        loop {
            match attempt().await {
                Ok(value) => {
                    self.reset();
                    return Some(Ok(value));
                }
                Err(error) if matches!(recovery(&error), Recovery::Retry | Recovery::Reconnect) => {
                    on_retry(&error);
                    if self
                        .pause_at_least(asked(&error), interrupt.as_mut())
                        .await
                        .is_some()
                    {
                        return None;
                    }
                }
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_the_cap_and_resets() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut ceilings = Vec::new();
        for attempt in 0..10u32 {
            let delay = backoff.next_delay(&mut rng);
            let ceiling =
                Duration::from_millis(100 * (1u64 << attempt)).min(Duration::from_secs(2));
            assert!(
                delay >= Duration::from_millis(100) && delay <= ceiling,
                "{delay:?} > {ceiling:?}"
            );
            ceilings.push(ceiling);
        }
        assert_eq!(*ceilings.last().unwrap(), Duration::from_secs(2));
        backoff.reset();
        assert!(backoff.next_delay(&mut rng) <= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_the_service_asked_for_is_a_floor_under_the_backoff() {
        let mut retry = retry();
        let started = tokio::time::Instant::now();
        retry
            .pause_at_least(Some(Duration::from_secs(2)), std::future::pending::<()>())
            .await;
        assert!(started.elapsed() >= Duration::from_secs(2));
        let started = tokio::time::Instant::now();
        retry
            .pause_at_least(None, std::future::pending::<()>())
            .await;
        assert!(started.elapsed() <= Duration::from_millis(40));
    }

    fn retry() -> Retry {
        Retry::new(Duration::from_millis(10), Duration::from_millis(40))
    }

    #[tokio::test(start_paused = true)]
    async fn run_retries_transient_errors_until_success() {
        let mut attempts = 0;
        let mut retried = Vec::new();
        let result = retry()
            .run(
                || {
                    attempts += 1;
                    let n = attempts;
                    async move {
                        if n < 4 {
                            Err(n)
                        } else {
                            Ok(n)
                        }
                    }
                },
                |_| Recovery::Retry,
                |e| retried.push(*e),
                std::future::pending(),
            )
            .await;
        assert_eq!(result, Some(Ok(4)));
        assert_eq!(retried, vec![1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn run_stops_at_an_error_retrying_cannot_fix() {
        for stop_at in [Recovery::Fatal, Recovery::PartitionLost, Recovery::Reread] {
            let mut attempts = 0;
            let result: Option<Result<(), u32>> = retry()
                .run(
                    || {
                        attempts += 1;
                        let n = attempts;
                        async move { Err(n) }
                    },
                    |e| if *e < 3 { Recovery::Reconnect } else { stop_at },
                    |_| {},
                    std::future::pending(),
                )
                .await;
            assert_eq!(result, Some(Err(3)), "{stop_at:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn run_ends_when_interrupted_while_waiting() {
        let stop = tokio_util::sync::CancellationToken::new();
        let mut attempts = 0;
        let canceller = stop.clone();
        let result: Option<Result<(), ()>> = retry()
            .run(
                || {
                    attempts += 1;
                    if attempts == 3 {
                        canceller.cancel();
                    }
                    async { Err(()) }
                },
                |_| Recovery::Retry,
                |_| {},
                stop.cancelled(),
            )
            .await;
        assert_eq!(result, None);
        assert_eq!(attempts, 3);
    }
}
