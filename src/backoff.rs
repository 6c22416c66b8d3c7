//! Capped exponential backoff with full jitter: the one retry delay used everywhere.

use std::time::Duration;

use rand::Rng;

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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn grows_exponentially_within_the_cap_and_resets() {
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
}
