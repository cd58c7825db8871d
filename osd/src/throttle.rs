//! Recovery throttles whose limits may change while they are in use: a counting limit (how
//! many backfills or recovery operations at once) and a byte rate. The limits come from the
//! cluster options, read again at every acquire, so `tidepool config set` takes effect at the
//! next operation without a restart.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// At most `limit()` holders at once; the limit is read when a slot is asked for.
#[derive(Debug, Default)]
pub struct Slots {
    held: Mutex<u64>,
    freed: Notify,
}

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot<'a>(&'a Slots);

impl Slots {
    /// Waits for a slot under the limit `limit` gives (read again whenever a slot frees).
    pub async fn acquire(&self, limit: impl Fn() -> u64) -> Slot<'_> {
        loop {
            let freed = self.freed.notified();
            {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                if *held < limit().max(1) {
                    *held += 1;
                    return Slot(self);
                }
            }
            // A raised limit is noticed within a second even if no slot frees.
            let _ = tokio::time::timeout(Duration::from_secs(1), freed).await;
        }
    }

    /// Slots held now.
    pub fn held(&self) -> u64 {
        *self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.held.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.0.freed.notify_waiters();
    }
}

/// A byte rate: callers say how many bytes they are about to send and wait until the rate
/// allows them. A rate of 0 is unlimited.
#[derive(Debug)]
pub struct Rate {
    /// When the bytes sent so far will have been paid for.
    paid_until: Mutex<Instant>,
}

impl Default for Rate {
    fn default() -> Rate {
        Rate {
            paid_until: Mutex::new(Instant::now()),
        }
    }
}

impl Rate {
    /// How long to wait before sending `bytes` at `per_sec` bytes per second, booking them.
    /// Unused time is not saved up beyond one second, so an idle OSD does not burst.
    pub fn book(&self, bytes: u64, per_sec: u64, now: Instant) -> Duration {
        if per_sec == 0 {
            return Duration::ZERO;
        }
        let mut paid = self.paid_until.lock().unwrap_or_else(|p| p.into_inner());
        let floor = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        let start = (*paid).max(floor);
        let cost = Duration::from_secs_f64(bytes as f64 / per_sec as f64);
        *paid = start + cost;
        paid.saturating_duration_since(now)
    }

    /// Waits until `bytes` may be sent at `per_sec`.
    pub async fn take(&self, bytes: u64, per_sec: u64) {
        let wait = self.book(bytes, per_sec, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule: no more than the limit hold slots at once, and a freed slot lets a waiter in.
    #[tokio::test]
    async fn slots_honour_the_limit_and_hand_over() {
        let slots = Slots::default();
        let a = slots.acquire(|| 2).await;
        let _b = slots.acquire(|| 2).await;
        assert_eq!(slots.held(), 2);
        let third = tokio::time::timeout(Duration::from_millis(50), slots.acquire(|| 2)).await;
        assert!(
            third.is_err(),
            "a third slot was granted under a limit of 2"
        );
        drop(a);
        let _c = tokio::time::timeout(Duration::from_millis(500), slots.acquire(|| 2))
            .await
            .expect("a freed slot is handed over");
        // A raised limit lets a waiter in without any slot freeing.
        let _d = tokio::time::timeout(Duration::from_secs(3), slots.acquire(|| 3))
            .await
            .expect("a raised limit is noticed");
        assert_eq!(slots.held(), 3);
    }

    /// Rule: booked bytes cost bytes/rate of waiting, back to back; 0 means unlimited.
    #[test]
    fn rate_books_bytes_back_to_back() {
        let rate = Rate::default();
        let now = Instant::now();
        assert_eq!(rate.book(1 << 20, 0, now), Duration::ZERO);
        let first = rate.book(1 << 20, 1 << 20, now);
        let second = rate.book(1 << 20, 1 << 20, now);
        assert!(first <= Duration::from_secs(1), "{first:?}");
        assert!(second > first, "{second:?} after {first:?}");
        assert!(second <= Duration::from_secs(2), "{second:?}");
    }
}
