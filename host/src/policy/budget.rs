//! The per-primary write budget: how many mutating requests, and how many bytes, an
//! untrusted module may make the host send for one primary before the host holds the
//! rest back.
//!
//! A hostile or buggy module can return mutating actions on every reconcile and loop at
//! API-server speed, filling etcd. Before executing a batch of actions the host calls
//! [`WriteBudget::take`] with the number of mutating requests and their total body size;
//! the batch runs only if the whole of it fits.
//!
//! Guarantees, per primary (key):
//!
//! - **Rate.** A token bucket of [`WriteBudgetConfig::burst`] tokens refilled at
//!   [`WriteBudgetConfig::writes_per_second`]. Over any interval of length `t` the
//!   admitted writes are at most `burst + writes_per_second * t`, plus the excess of one
//!   oversized batch (see below).
//! - **Bytes.** In any 60 s window (both ends included) the admitted bytes are at most
//!   `max(bytes_per_minute, the largest single batch)`, so never more than the limit by
//!   more than one request's size. See `ByteWindow` for why this is an exact sliding
//!   window rather than a fixed one.
//! - **Overall (optional, off by default).** One more token bucket shared by every
//!   primary, refilled at [`WriteBudgetConfig::overall_writes_per_second`].
//! - **All or nothing.** `take` either consumes the budget for the whole batch or
//!   consumes nothing and returns how long to wait; a batch is never half-admitted.
//! - **Always eventually possible.** A batch larger than the burst passes when the
//!   bucket is full and leaves it in debt (negative tokens), which later batches wait
//!   off; a batch larger than `bytes_per_minute` passes when the window is empty. So no
//!   wait is ever one that cannot be satisfied, and the long-run rate still holds.
//! - **Bounded waits.** A returned wait is more than zero and at most [`MAX_WAIT`].
//!   It is rounded up to whole milliseconds so that a caller that sleeps exactly that
//!   long finds the batch fits; when the true wait is longer than the cap (deep debt)
//!   the caller simply gets another wait when it retries.
//! - **No panics.** No input (any counts, `u64::MAX` bytes, instants far apart, or a
//!   `now` earlier than an earlier `now`) overflows or panics: durations saturate and a
//!   clock that steps back is treated as no time passing.
//! - **Bounded memory.** State is per key, each holding at most about
//!   `60 s / 1 s` byte-window slots; [`WriteBudget::forget`] drops a deleted primary.
//!
//! The defaults never slow a healthy module: a primary that converges with fewer than
//! ten writes and then goes quiet is far inside a 20-write burst and 8 MiB per minute.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The longest wait [`WriteBudget::take`] returns.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// The span of the bytes window: `bytes_per_minute` is a per-minute budget.
pub const BYTES_WINDOW: Duration = Duration::from_secs(60);

/// The least time between two `WriteBudgetExceeded` warnings for one primary.
pub const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// The shortest wait returned, so that "over budget" never reads as "retry now".
const MIN_WAIT: Duration = Duration::from_millis(1);

/// Byte records closer together than this share one slot. This bounds a key's memory
/// to about `BYTES_WINDOW / SLOT` slots however often it writes; a slot is kept until
/// its *latest* write leaves the window, so coalescing only ever makes the window
/// stricter (by at most one slot), never looser.
const SLOT: Duration = Duration::from_secs(1);

/// Relative tolerance when comparing tokens: refilling in many small float steps can
/// leave a bucket a hair under a whole token that it has, in fact, earned.
const TOKEN_TOLERANCE: f64 = 1e-9;

/// The limits of the write budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriteBudgetConfig {
    /// Mutating requests per second each primary earns (the bucket's refill rate).
    pub writes_per_second: f64,
    /// How many mutating requests a primary may make at once after being quiet.
    pub burst: u32,
    /// Bytes of request bodies each primary may write in any 60 s window.
    pub bytes_per_minute: u64,
    /// Mutating requests per second across all primaries together; `None` is no cap.
    pub overall_writes_per_second: Option<f64>,
}

impl Default for WriteBudgetConfig {
    /// 5 writes/s with a burst of 20, 8 MiB per minute, no overall cap: a converge of a
    /// handful of objects passes untouched, while a write loop is held to a trickle.
    fn default() -> Self {
        Self {
            writes_per_second: 5.0,
            burst: 20,
            bytes_per_minute: 8 * 1024 * 1024,
            overall_writes_per_second: None,
        }
    }
}

impl WriteBudgetConfig {
    /// Checks the limits: rates positive and finite, burst and bytes at least 1.
    pub fn validate(&self) -> Result<(), BudgetConfigError> {
        if !valid_rate(self.writes_per_second) {
            return Err(BudgetConfigError::WritesPerSecond(self.writes_per_second));
        }
        if self.burst == 0 {
            return Err(BudgetConfigError::Burst);
        }
        if self.bytes_per_minute == 0 {
            return Err(BudgetConfigError::BytesPerMinute);
        }
        match self.overall_writes_per_second {
            Some(rate) if !valid_rate(rate) => Err(BudgetConfigError::OverallWritesPerSecond(rate)),
            _ => Ok(()),
        }
    }

    /// This config with every field `validate` would reject replaced by its default
    /// (an invalid overall cap becomes no cap), so a budget is always well defined.
    fn sanitized(self) -> Self {
        let fallback = Self::default();
        Self {
            writes_per_second: if valid_rate(self.writes_per_second) {
                self.writes_per_second
            } else {
                fallback.writes_per_second
            },
            burst: if self.burst == 0 { fallback.burst } else { self.burst },
            bytes_per_minute: if self.bytes_per_minute == 0 {
                fallback.bytes_per_minute
            } else {
                self.bytes_per_minute
            },
            overall_writes_per_second: self.overall_writes_per_second.filter(|rate| valid_rate(*rate)),
        }
    }
}

/// Whether `rate` can refill a bucket: positive and finite (NaN fails both).
fn valid_rate(rate: f64) -> bool {
    rate.is_finite() && rate > 0.0
}

/// Why a [`WriteBudgetConfig`] was rejected.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum BudgetConfigError {
    /// `writes_per_second` is not a positive finite number.
    #[error("writes per second must be positive and finite, got {0}")]
    WritesPerSecond(f64),
    /// `burst` is zero.
    #[error("write burst must be at least 1")]
    Burst,
    /// `bytes_per_minute` is zero.
    #[error("bytes per minute must be at least 1")]
    BytesPerMinute,
    /// `overall_writes_per_second` is set but not a positive finite number.
    #[error("overall writes per second must be positive and finite, got {0}")]
    OverallWritesPerSecond(f64),
}

/// Which limit a refused batch ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Exceeded {
    /// The primary's mutating requests per second (its token bucket).
    #[error("write rate")]
    Rate,
    /// The primary's bytes per minute.
    #[error("bytes per minute")]
    Bytes,
    /// The mutating requests per second across all primaries.
    #[error("overall write rate")]
    Overall,
}

impl Exceeded {
    /// The metric label: `rate`, `bytes` or `overall`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::Bytes => "bytes",
            Self::Overall => "overall",
        }
    }
}

/// A batch that does not fit the budget now; nothing was consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverBudget {
    /// Retry the batch after `after`.
    #[error("write budget exceeded ({exceeded}), retry after {after:?}")]
    Wait {
        /// How long until the batch would fit (more than zero, at most [`MAX_WAIT`]).
        /// With the overall cap on, other primaries may take the shared budget first.
        after: Duration,
        /// The limit that needs the longest wait.
        exceeded: Exceeded,
    },
}

/// The write budget of every primary seen, plus the optional shared cap.
#[derive(Debug, Clone)]
pub struct WriteBudget<K> {
    config: WriteBudgetConfig,
    overall: Option<TokenBucket>,
    primaries: HashMap<K, Primary>,
}

impl<K: Eq + Hash + Clone> WriteBudget<K> {
    /// A budget with no primary seen yet. `new` cannot fail: a field that
    /// [`WriteBudgetConfig::validate`] would reject falls back to its default (an
    /// invalid overall cap to none), so validate the config first to report mistakes.
    pub fn new(config: WriteBudgetConfig) -> Self {
        let config = config.sanitized();
        Self { config, overall: None, primaries: HashMap::new() }
    }

    /// The limits in force (after falling back from invalid fields).
    #[cfg(test)]
    pub fn config(&self) -> &WriteBudgetConfig {
        &self.config
    }

    /// Takes the budget for a batch of `writes` mutating requests totalling `bytes`, at
    /// `now`. All or nothing: `Ok(())` consumes it; [`OverBudget::Wait`] consumes nothing
    /// and says how long until the batch would fit and which limit holds it back.
    ///
    /// A batch larger than the burst passes when the bucket is full (the bucket goes
    /// into debt); one larger than `bytes_per_minute` passes when no bytes were written
    /// in the last 60 s. An empty batch always passes and records nothing.
    pub fn take(&mut self, key: &K, writes: u32, bytes: u64, now: Instant) -> Result<(), OverBudget> {
        if writes == 0 && bytes == 0 {
            return Ok(());
        }
        let config = self.config;
        let overall = overall_bucket(&mut self.overall, &config, now);
        let primary = self.primaries.entry(key.clone()).or_insert_with(|| Primary::new(&config, now));
        overall.refill(now);
        primary.rate.refill(now);
        primary.bytes.expire(now);

        let waits = [
            (primary.rate.wait(writes), Exceeded::Rate),
            (primary.bytes.wait(bytes, config.bytes_per_minute, now), Exceeded::Bytes),
            (overall.wait(writes), Exceeded::Overall),
        ];
        if let Some((after, exceeded)) = longest(waits) {
            return Err(OverBudget::Wait { after, exceeded });
        }
        primary.rate.consume(writes);
        primary.bytes.record(bytes, now);
        overall.consume(writes);
        Ok(())
    }

    /// Forgets a primary (it was deleted), so memory stays bounded by live primaries.
    /// If it comes back it starts with a full budget.
    pub fn forget(&mut self, key: &K) {
        self.primaries.remove(key);
    }

    /// Whether a `WriteBudgetExceeded` event for `key` may be recorded at `now`: true at
    /// most once per key per [`WARN_INTERVAL`], so the warning cannot itself become a
    /// write loop. A `true` answer counts as the warning having been recorded.
    pub fn should_warn(&mut self, key: &K, now: Instant) -> bool {
        let config = self.config;
        let primary = self.primaries.entry(key.clone()).or_insert_with(|| Primary::new(&config, now));
        primary.warn_at(now)
    }

    /// How many primaries the budget holds state for.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.primaries.len()
    }
}

/// The shared bucket, created full on first use; with no overall cap, a bucket that can
/// never run short, so `take` has one code path either way.
fn overall_bucket<'a>(
    overall: &'a mut Option<TokenBucket>,
    config: &WriteBudgetConfig,
    now: Instant,
) -> &'a mut TokenBucket {
    overall.get_or_insert_with(|| match config.overall_writes_per_second {
        // At least one second's worth, and at least one primary's burst, so that the cap
        // alone never holds back a single primary's healthy converge.
        Some(rate) => TokenBucket::full(rate.max(f64::from(config.burst)), rate, now),
        None => TokenBucket::full(f64::INFINITY, f64::INFINITY, now),
    })
}

/// The wait with the longest duration (the first on ties, so per-primary limits are
/// named before the shared one), if any limit needs one.
fn longest(waits: [(Option<Duration>, Exceeded); 3]) -> Option<(Duration, Exceeded)> {
    waits.into_iter().filter_map(|(wait, exceeded)| wait.map(|after| (after, exceeded))).fold(
        None,
        |best, next| match best {
            Some(best) if best.0 >= next.0 => Some(best),
            _ => Some(next),
        },
    )
}

/// One primary's state.
#[derive(Debug, Clone)]
struct Primary {
    rate: TokenBucket,
    bytes: ByteWindow,
    warned: Option<Instant>,
}

impl Primary {
    /// A primary seen for the first time: full bucket, empty window, never warned.
    fn new(config: &WriteBudgetConfig, now: Instant) -> Self {
        Self {
            rate: TokenBucket::full(f64::from(config.burst), config.writes_per_second, now),
            bytes: ByteWindow::default(),
            warned: None,
        }
    }

    /// Records a warning at `now` unless one was recorded less than a minute ago. A
    /// clock that stepped back reads as no time passed, so it does not re-open the gate.
    fn warn_at(&mut self, now: Instant) -> bool {
        if let Some(at) = self.warned
            && now.saturating_duration_since(at) < WARN_INTERVAL
        {
            return false;
        }
        self.warned = Some(now);
        true
    }
}

/// A token bucket holding up to `capacity` tokens, refilled at `rate` per second.
///
/// Tokens are `f64`: capacities and batch sizes are at most `u32::MAX`, exact in an
/// `f64`, and fractional tokens are what a rate in writes per second accrues. Tokens go
/// negative (debt) after a batch larger than the capacity.
#[derive(Debug, Clone)]
struct TokenBucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket as of `now`.
    fn full(capacity: f64, rate: f64, now: Instant) -> Self {
        Self { capacity, rate, tokens: capacity, updated: now }
    }

    /// Adds what was earned since the last refill. A `now` before that counts as no time
    /// passing and leaves the mark where it is, so a clock stepping back earns nothing
    /// and, when it steps forward again, nothing twice.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated);
        if elapsed.is_zero() {
            return;
        }
        // The product may be infinite (instants far apart); `min` brings it back to the
        // capacity. It is never NaN: the rate is positive, and so is `elapsed`.
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.capacity);
        self.updated = now;
    }

    /// The tokens a batch of `writes` needs on hand: all of them, or a full bucket for a
    /// batch bigger than the bucket (which then goes into debt).
    fn needed(&self, writes: u32) -> f64 {
        f64::from(writes).min(self.capacity)
    }

    /// How long until a batch of `writes` fits, or `None` if it fits now.
    fn wait(&self, writes: u32) -> Option<Duration> {
        // A batch with no writes costs no tokens, so debt does not hold it back.
        if writes == 0 {
            return None;
        }
        let needed = self.needed(writes);
        let slack = TOKEN_TOLERANCE * needed.max(1.0);
        if self.tokens + slack >= needed {
            return None;
        }
        Some(wait_from_secs((needed - self.tokens) / self.rate))
    }

    /// Takes `writes` tokens (after [`Self::wait`] said they fit).
    fn consume(&mut self, writes: u32) {
        self.tokens -= f64::from(writes);
    }
}

/// A primary's bytes written in the last [`BYTES_WINDOW`]: an exact sliding window.
///
/// Why sliding and not fixed: a fixed per-minute counter lets a module write the whole
/// budget at the end of one minute and again at the start of the next, twice the limit
/// within a few seconds. A sliding log admits a batch only if it fits with everything
/// written in the 60 s before it, which is what "per minute" has to mean for etcd.
/// (A token bucket for bytes would have the same double-spend as the fixed window.)
/// Records are coalesced into [`SLOT`]-long slots to bound memory; a slot is only
/// dropped once its latest write is more than 60 s old, so coalescing is conservative.
#[derive(Debug, Clone, Default)]
struct ByteWindow {
    /// Oldest first; `latest` never decreases from one slot to the next.
    slots: VecDeque<ByteSlot>,
}

/// Bytes written between `first` and `latest`.
#[derive(Debug, Clone)]
struct ByteSlot {
    first: Instant,
    latest: Instant,
    bytes: u64,
}

impl ByteWindow {
    /// Drops slots whose latest write is more than 60 s before `now`. Both ends of the
    /// window count, so no closed 60 s interval can hold more than the limit.
    fn expire(&mut self, now: Instant) {
        while let Some(oldest) = self.slots.front() {
            if now.saturating_duration_since(oldest.latest) <= BYTES_WINDOW {
                break;
            }
            self.slots.pop_front();
        }
    }

    /// Bytes still in the window (after [`Self::expire`]).
    fn total(&self) -> u64 {
        self.slots.iter().fold(0, |sum, slot| sum.saturating_add(slot.bytes))
    }

    /// How long until `bytes` more fit under `limit`, or `None` if they fit now.
    fn wait(&self, bytes: u64, limit: u64, now: Instant) -> Option<Duration> {
        let mut held = self.total();
        if fits(held, bytes, limit) {
            return None;
        }
        // Walk from the oldest slot: the batch fits once enough of them have left.
        for slot in &self.slots {
            held = held.saturating_sub(slot.bytes);
            if fits(held, bytes, limit) {
                let age = now.saturating_duration_since(slot.latest);
                // The slot leaves the window once it is *more* than 60 s old.
                let leaves_in = BYTES_WINDOW.saturating_sub(age).saturating_add(Duration::from_nanos(1));
                return Some(round_wait(leaves_in));
            }
        }
        // Unreachable (an empty window fits anything), but never promise less than this.
        Some(MAX_WAIT)
    }

    /// Records `bytes` written at `now`, into the newest slot if it is recent.
    fn record(&mut self, bytes: u64, now: Instant) {
        if bytes == 0 {
            return;
        }
        if let Some(newest) = self.slots.back_mut()
            && now.saturating_duration_since(newest.first) < SLOT
        {
            newest.bytes = newest.bytes.saturating_add(bytes);
            newest.latest = newest.latest.max(now);
            return;
        }
        self.slots.push_back(ByteSlot { first: now, latest: now, bytes });
    }
}

/// Whether `bytes` more fit when `held` are in the window: within the limit, or into an
/// empty window (a batch bigger than the whole limit must pass some time).
fn fits(held: u64, bytes: u64, limit: u64) -> bool {
    held == 0 || held.checked_add(bytes).is_some_and(|total| total <= limit)
}

/// A wait of `seconds` (from float token arithmetic) as a returned wait.
fn wait_from_secs(seconds: f64) -> Duration {
    // Fails on NaN, negative or huge values; all of them unreachable, the cap is safe.
    Duration::try_from_secs_f64(seconds).map_or(MAX_WAIT, round_wait)
}

/// Rounds a wait up to whole milliseconds, within `MIN_WAIT..=MAX_WAIT`. Rounding up
/// means a caller that sleeps exactly the wait finds the batch fits, rather than a
/// nanosecond short and handed a second, tiny wait.
fn round_wait(wait: Duration) -> Duration {
    let millis = wait.as_nanos().div_ceil(1_000_000);
    match u64::try_from(millis) {
        Ok(millis) => Duration::from_millis(millis).clamp(MIN_WAIT, MAX_WAIT),
        Err(_) => MAX_WAIT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn wait_of(result: Result<(), OverBudget>) -> Option<(Duration, Exceeded)> {
        match result {
            Ok(()) => None,
            Err(OverBudget::Wait { after, exceeded }) => Some((after, exceeded)),
        }
    }

    /// The wait of a refused batch, checked to be within `(0, MAX_WAIT]`.
    fn refused(result: Result<(), OverBudget>, expected: Exceeded) -> Duration {
        let Some((after, exceeded)) = wait_of(result) else {
            panic!("expected a wait on {expected:?}, the batch passed");
        };
        assert_eq!(exceeded, expected);
        assert!(after > Duration::ZERO && after <= MAX_WAIT, "wait {after:?} out of range");
        after
    }

    /// A small deterministic generator (xorshift64*) so property tests need no crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    #[test]
    fn defaults_are_the_suggested_limits_and_valid() {
        let config = WriteBudgetConfig::default();
        assert_eq!(config.writes_per_second, 5.0);
        assert_eq!(config.burst, 20);
        assert_eq!(config.bytes_per_minute, 8 * MIB);
        assert_eq!(config.overall_writes_per_second, None);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_each_bad_field() {
        let base = WriteBudgetConfig::default();
        let cases = [
            (
                WriteBudgetConfig { writes_per_second: 0.0, ..base },
                Some(BudgetConfigError::WritesPerSecond(0.0)),
            ),
            (
                WriteBudgetConfig { writes_per_second: -1.0, ..base },
                Some(BudgetConfigError::WritesPerSecond(-1.0)),
            ),
            (
                WriteBudgetConfig { writes_per_second: f64::INFINITY, ..base },
                Some(BudgetConfigError::WritesPerSecond(f64::INFINITY)),
            ),
            (WriteBudgetConfig { burst: 0, ..base }, Some(BudgetConfigError::Burst)),
            (WriteBudgetConfig { bytes_per_minute: 0, ..base }, Some(BudgetConfigError::BytesPerMinute)),
            (
                WriteBudgetConfig { overall_writes_per_second: Some(0.0), ..base },
                Some(BudgetConfigError::OverallWritesPerSecond(0.0)),
            ),
            (WriteBudgetConfig { overall_writes_per_second: Some(100.0), ..base }, None),
            (
                WriteBudgetConfig {
                    writes_per_second: f64::MIN_POSITIVE,
                    burst: 1,
                    bytes_per_minute: 1,
                    ..base
                },
                None,
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(config.validate().err(), expected, "{config:?}");
        }
        // NaN never equals itself, so check its variant by shape.
        let nan = WriteBudgetConfig { writes_per_second: f64::NAN, ..base };
        assert!(matches!(nan.validate(), Err(BudgetConfigError::WritesPerSecond(rate)) if rate.is_nan()));
        let nan = WriteBudgetConfig { overall_writes_per_second: Some(f64::NAN), ..base };
        assert!(matches!(nan.validate(), Err(BudgetConfigError::OverallWritesPerSecond(_))));
        assert_eq!(BudgetConfigError::Burst.to_string(), "write burst must be at least 1");
    }

    #[test]
    fn new_falls_back_from_invalid_fields() {
        let config = WriteBudgetConfig {
            writes_per_second: f64::NAN,
            burst: 0,
            bytes_per_minute: 0,
            overall_writes_per_second: Some(-3.0),
        };
        let budget = WriteBudget::<&str>::new(config);
        assert_eq!(*budget.config(), WriteBudgetConfig::default());
    }

    #[test]
    fn a_healthy_converge_is_never_delayed() {
        // (writes per batch, batches, spacing, bytes per write)
        let cases = [
            (10, 1, ms(0), 4 * KIB),
            (1, 10, ms(0), 4 * KIB),
            (1, 10, ms(1), 64 * KIB),
            (2, 5, ms(50), 512 * KIB),
            (9, 1, ms(0), 800 * KIB),
        ];
        for (writes, batches, spacing, size) in cases {
            let mut budget = WriteBudget::new(WriteBudgetConfig::default());
            let start = Instant::now();
            // The first converge, then the same again much later (a resync or an edit).
            for converge in [start, start + Duration::from_secs(600)] {
                let mut now = converge;
                for _ in 0..batches {
                    let taken = budget.take(&"p", writes, u64::from(writes) * size, now);
                    assert_eq!(taken, Ok(()), "{writes}x{batches} every {spacing:?} of {size} bytes");
                    now += spacing;
                }
            }
        }
    }

    /// Drives a module that wants to write once every 10 ms for `seconds`; `sleeps`
    /// says whether the host honours the wait or the module just tries again next tick.
    /// Returns when each write was admitted.
    fn write_loop(config: WriteBudgetConfig, seconds: u64, size: u64, sleeps: bool) -> Vec<Instant> {
        let mut budget = WriteBudget::new(config);
        let start = Instant::now();
        let end = start + Duration::from_secs(seconds);
        let mut now = start;
        let mut admitted = Vec::new();
        while now < end {
            match budget.take(&"p", 1, size, now) {
                Ok(()) => {
                    admitted.push(now);
                    now += ms(10);
                }
                Err(OverBudget::Wait { after, .. }) => {
                    assert!(after > Duration::ZERO && after <= MAX_WAIT);
                    now += if sleeps { after } else { ms(10) };
                }
            }
        }
        admitted
    }

    #[test]
    fn a_write_loop_is_held_to_the_rate_after_the_burst() {
        for sleeps in [false, true] {
            let admitted = write_loop(WriteBudgetConfig::default(), 60, 100, sleeps);
            // Burst of 20, then 5/s for 60 s; the last refill may or may not land.
            let allowed = 20 + 5 * 60;
            assert!(
                (allowed - 1..=allowed + 1).contains(&admitted.len()),
                "sleeps {sleeps}: {} writes",
                admitted.len()
            );
            // The burst goes at loop speed; after it, writes are 200 ms apart.
            let start = admitted[0];
            assert!(admitted[19] - start < Duration::from_secs(1));
            for pair in admitted[21..].windows(2) {
                assert!(pair[1] - pair[0] >= ms(190), "{:?}", pair[1] - pair[0]);
            }
        }
    }

    #[test]
    fn the_bytes_window_holds_a_big_status_loop_to_the_limit() {
        let size = 900 * KIB;
        for sleeps in [false, true] {
            let admitted = write_loop(WriteBudgetConfig::default(), 300, size, sleeps);
            // Every closed 60 s window ending at an admission (the fullest ones).
            for (end, at) in admitted.iter().enumerate() {
                let in_window = admitted[..=end].iter().filter(|t| *at - **t <= BYTES_WINDOW).count();
                let bytes = in_window as u64 * size;
                assert!(bytes <= 8 * MIB, "sleeps {sleeps}: {bytes} bytes in a minute");
            }
            // And not starved: 9 fit in 8 MiB, so about 9 every minute (a slot or so late).
            assert!(admitted.len() >= 5 * 9 - 5, "sleeps {sleeps}: only {}", admitted.len());
        }
    }

    #[test]
    fn the_big_status_loop_is_refused_for_bytes() {
        let mut budget = WriteBudget::new(WriteBudgetConfig::default());
        let now = Instant::now();
        for _ in 0..9 {
            assert_eq!(budget.take(&"p", 1, 900 * KIB, now), Ok(()));
        }
        let after = refused(budget.take(&"p", 1, 900 * KIB, now), Exceeded::Bytes);
        assert!(after > Duration::from_secs(59), "{after:?}");
    }

    #[test]
    fn a_refused_batch_consumes_nothing() {
        let start = Instant::now();
        let config = WriteBudgetConfig { burst: 20, ..WriteBudgetConfig::default() };
        let mut budget = WriteBudget::new(config);
        // Rate: 15 of 20 taken; 10 more is refused and leaves the remaining 5 intact.
        assert_eq!(budget.take(&"p", 15, 0, start), Ok(()));
        refused(budget.take(&"p", 10, 0, start), Exceeded::Rate);
        assert_eq!(budget.take(&"p", 5, 0, start), Ok(()));
        refused(budget.take(&"p", 1, 0, start), Exceeded::Rate);

        // Bytes: 7 MiB taken; 2 MiB more is refused and leaves the last MiB intact.
        assert_eq!(budget.take(&"q", 1, 7 * MIB, start), Ok(()));
        refused(budget.take(&"q", 1, 2 * MIB, start), Exceeded::Bytes);
        assert_eq!(budget.take(&"q", 1, MIB, start), Ok(()));

        // A batch refused for bytes takes no rate tokens either.
        let mut budget = WriteBudget::new(WriteBudgetConfig { burst: 2, ..config });
        assert_eq!(budget.take(&"p", 1, 8 * MIB, start), Ok(()));
        refused(budget.take(&"p", 1, 1, start), Exceeded::Bytes);
        assert_eq!(budget.take(&"p", 1, 0, start), Ok(()));
        refused(budget.take(&"p", 1, 0, start), Exceeded::Rate);
    }

    #[test]
    fn the_longest_wait_is_reported() {
        let start = Instant::now();
        let mut budget = WriteBudget::new(WriteBudgetConfig::default());
        // The bucket is empty (wait 200 ms) and the window full (wait 60 s).
        assert_eq!(budget.take(&"p", 20, 8 * MIB, start), Ok(()));
        let after = refused(budget.take(&"p", 1, 1, start), Exceeded::Bytes);
        assert!(after > Duration::from_secs(59));
        // Without bytes, the rate is what holds it back.
        assert_eq!(refused(budget.take(&"p", 1, 0, start), Exceeded::Rate), ms(200));
    }

    #[test]
    fn an_oversized_batch_passes_when_full_and_the_next_waits() {
        let start = Instant::now();
        let mut budget = WriteBudget::new(WriteBudgetConfig::default());
        // 50 writes against a burst of 20 pass on a full bucket, leaving 30 in debt.
        assert_eq!(budget.take(&"p", 50, 0, start), Ok(()));
        let after = refused(budget.take(&"p", 1, 0, start), Exceeded::Rate);
        assert_eq!(after, Duration::from_millis(6_200)); // 31 tokens at 5/s
        refused(budget.take(&"p", 1, 0, start + after - ms(1)), Exceeded::Rate);
        assert_eq!(budget.take(&"p", 1, 0, start + after), Ok(()));

        // An oversized batch on a bucket that is not full waits until it is full.
        let mut budget = WriteBudget::new(WriteBudgetConfig::default());
        assert_eq!(budget.take(&"p", 1, 0, start), Ok(()));
        let after = refused(budget.take(&"p", 50, 0, start), Exceeded::Rate);
        assert_eq!(after, ms(200));
        assert_eq!(budget.take(&"p", 50, 0, start + after), Ok(()));

        // 20 MiB against 8 MiB a minute passes into an empty window; the next waits 60 s.
        let mut budget = WriteBudget::new(WriteBudgetConfig::default());
        assert_eq!(budget.take(&"p", 1, 20 * MIB, start), Ok(()));
        let after = refused(budget.take(&"p", 1, 1, start + ms(500)), Exceeded::Bytes);
        assert_eq!(after, Duration::from_millis(59_501));
        assert_eq!(budget.take(&"p", 1, 1, start + ms(500) + after), Ok(()));
    }

    #[test]
    fn a_batch_in_deep_debt_passes_after_repeated_capped_waits() {
        let start = Instant::now();
        let mut budget = WriteBudget::new(WriteBudgetConfig::default());
        // 1000 writes leave 980 in debt: 196 s at 5/s, more than one capped wait.
        assert_eq!(budget.take(&"p", 1000, 0, start), Ok(()));
        let mut now = start;
        let mut waits = 0;
        while let Err(OverBudget::Wait { after, .. }) = budget.take(&"p", 1, 0, now) {
            assert!(after > Duration::ZERO && after <= MAX_WAIT);
            now += after;
            waits += 1;
            assert!(waits < 10, "still waiting at {:?}", now - start);
        }
        assert_eq!(waits, 4);
        assert_eq!(now - start, Duration::from_millis(196_200));
    }

    #[test]
    fn the_overall_cap_holds_across_primaries() {
        let start = Instant::now();
        let config = WriteBudgetConfig {
            writes_per_second: 100.0,
            burst: 50,
            overall_writes_per_second: Some(10.0),
            ..WriteBudgetConfig::default()
        };
        let mut budget = WriteBudget::new(config);
        // The shared bucket holds max(burst, rate) = 50: one primary's burst passes.
        assert_eq!(budget.take(&"a", 40, 0, start), Ok(()));
        let after = refused(budget.take(&"b", 20, 0, start), Exceeded::Overall);
        assert_eq!(after, Duration::from_secs(1)); // 10 more tokens at 10/s
        assert_eq!(budget.take(&"b", 10, 0, start), Ok(()));
        refused(budget.take(&"a", 1, 0, start), Exceeded::Overall);
        assert_eq!(budget.take(&"b", 10, 0, start + Duration::from_secs(1)), Ok(()));

        // Two primaries looping every 10 ms for a minute share 10/s between them.
        let mut budget = WriteBudget::new(config);
        let mut admitted = 0;
        for tick in 0..6_000 {
            for key in ["a", "b"] {
                if budget.take(&key, 1, 0, start + ms(tick * 10)).is_ok() {
                    admitted += 1;
                }
            }
        }
        assert!((50 + 10 * 60 - 1..=50 + 10 * 60 + 1).contains(&admitted), "{admitted}");
    }

    #[test]
    fn warnings_are_limited_to_one_per_key_per_minute() {
        let start = Instant::now();
        let mut budget = WriteBudget::<&str>::new(WriteBudgetConfig::default());
        let cases = [
            ("p", 0, true),
            ("p", 1, false),
            ("q", 1, true),
            ("p", 59_999, false),
            ("p", 60_000, true),
            ("q", 60_000, false),
            ("p", 30_000, false), // the clock stepped back
            ("p", 119_999, false),
            ("q", 61_000, true),
            ("p", 120_000, true),
        ];
        for (key, at, expected) in cases {
            assert_eq!(budget.should_warn(&key, start + ms(at)), expected, "{key} at {at} ms");
        }
    }

    #[test]
    fn forget_drops_a_primary_and_its_state() {
        let start = Instant::now();
        let mut budget = WriteBudget::new(WriteBudgetConfig::default());
        assert_eq!(budget.take(&"p", 20, 8 * MIB, start), Ok(()));
        assert!(budget.should_warn(&"p", start));
        assert_eq!(budget.take(&"q", 1, 1, start), Ok(()));
        assert_eq!(budget.tracked(), 2);

        budget.forget(&"p");
        budget.forget(&"never seen");
        assert_eq!(budget.tracked(), 1);
        // Back with a full budget and a fresh warning allowance.
        assert_eq!(budget.take(&"p", 20, 8 * MIB, start), Ok(()));
        assert!(budget.should_warn(&"p", start));
        // An empty batch records nothing, not even the key.
        assert_eq!(budget.take(&"r", 0, 0, start), Ok(()));
        assert_eq!(budget.tracked(), 2);
    }

    #[test]
    fn extreme_inputs_and_backward_clocks_do_not_panic() {
        let start = Instant::now();
        let far = start.checked_add(Duration::from_secs(1 << 40)).unwrap_or(start);
        let configs = [
            WriteBudgetConfig::default(),
            WriteBudgetConfig {
                writes_per_second: f64::MAX,
                burst: u32::MAX,
                bytes_per_minute: u64::MAX,
                overall_writes_per_second: Some(f64::MAX),
            },
            WriteBudgetConfig {
                writes_per_second: f64::MIN_POSITIVE,
                burst: 1,
                bytes_per_minute: 1,
                overall_writes_per_second: Some(f64::MIN_POSITIVE),
            },
        ];
        // (writes, bytes, when)
        let steps = [
            (u32::MAX, u64::MAX, start + Duration::from_secs(100)),
            (u32::MAX, u64::MAX, start), // earlier than before
            (1, 1, start),
            (u32::MAX, 0, far),
            (0, u64::MAX, far),
            (1, u64::MAX, start), // far back again
            (u32::MAX, u64::MAX, far + Duration::from_secs(61)),
            (1, 1, far + Duration::from_secs(61)),
        ];
        for config in configs {
            let mut budget = WriteBudget::new(config);
            for (writes, bytes, now) in steps {
                if let Some((after, _)) = wait_of(budget.take(&"p", writes, bytes, now)) {
                    assert!(after > Duration::ZERO && after <= MAX_WAIT, "{config:?}: {after:?}");
                }
                budget.should_warn(&"p", now);
            }
        }
        // With the defaults, the first u64::MAX batch passes on the empty window and
        // the full bucket, and what follows waits within the cap.
        let mut budget = WriteBudget::new(WriteBudgetConfig::default());
        assert_eq!(budget.take(&"p", u32::MAX, u64::MAX, start), Ok(()));
        let after = refused(budget.take(&"p", 1, 0, start), Exceeded::Rate);
        assert_eq!(after, MAX_WAIT);
        refused(budget.take(&"p", 0, 1, start), Exceeded::Bytes);
        refused(budget.take(&"p", 0, 1, start + Duration::from_secs(60)), Exceeded::Bytes);
        assert_eq!(budget.take(&"p", 0, 1, start + Duration::from_secs(60) + ms(1)), Ok(()));
    }

    #[test]
    fn a_clock_stepping_back_earns_nothing() {
        let start = Instant::now();
        let mut budget = WriteBudget::new(WriteBudgetConfig::default());
        let later = start + Duration::from_secs(10);
        assert_eq!(budget.take(&"p", 20, 0, later), Ok(()));
        // Back to `start`, then forward to `later` again: no time has passed either way.
        refused(budget.take(&"p", 1, 0, start), Exceeded::Rate);
        refused(budget.take(&"p", 1, 0, later), Exceeded::Rate);
        assert_eq!(budget.take(&"p", 1, 0, later + ms(200)), Ok(()));
    }

    /// Random batches from two primaries at random times against random limits, with
    /// and without the overall cap: the guarantees in the module doc hold for every
    /// admitted batch and every refusal.
    #[test]
    fn random_workloads_keep_the_guarantees() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..300 {
            let config = WriteBudgetConfig {
                writes_per_second: (1 + rng.below(50)) as f64 / 4.0,
                burst: 1 + rng.below(30) as u32,
                bytes_per_minute: 1 + rng.below(4 * MIB),
                overall_writes_per_second: (round % 2 == 1).then(|| (1 + rng.below(80)) as f64 / 4.0),
            };
            let mut budget = WriteBudget::new(config);
            let mut now = Instant::now();
            let mut admitted: [Vec<Admitted>; 2] = [Vec::new(), Vec::new()];
            for _ in 0..400 {
                now += match rng.below(10) {
                    0 => Duration::from_secs(rng.below(90)),
                    1 => Duration::ZERO,
                    _ => ms(rng.below(500)),
                };
                let key = rng.below(2) as usize;
                let writes = rng.below(u64::from(config.burst) + 5) as u32;
                let bytes = if rng.below(20) == 0 { rng.below(8 * MIB) } else { rng.below(256 * KIB) };
                match budget.take(&key, writes, bytes, now) {
                    Ok(()) => admitted[key].push((now, writes, bytes)),
                    Err(OverBudget::Wait { after, exceeded }) => {
                        assert!(after > Duration::ZERO && after <= MAX_WAIT, "{after:?}");
                        // Sleeping exactly the wait makes the batch fit, unless capped.
                        if after < MAX_WAIT {
                            let mut probe = budget.clone();
                            let retried = probe.take(&key, writes, bytes, now + after);
                            assert_eq!(retried, Ok(()), "{config:?} {exceeded:?} {after:?}");
                        }
                    }
                }
            }
            for primary in &admitted {
                check_rate(f64::from(config.burst), config.writes_per_second, primary);
                check_bytes(config.bytes_per_minute, primary);
            }
            if let Some(rate) = config.overall_writes_per_second {
                let mut all = admitted.concat();
                all.sort_by_key(|(at, ..)| *at);
                check_rate(rate.max(f64::from(config.burst)), rate, &all);
            }
        }
    }

    /// An admitted batch: when, how many writes, how many bytes.
    type Admitted = (Instant, u32, u64);

    /// Between any two admissions, writes stay within burst + rate * elapsed, plus the
    /// excess of the last batch if it was bigger than the burst. (Batches without writes
    /// take no tokens, so they are left out: they may pass while the bucket is in debt.)
    fn check_rate(burst: f64, rate: f64, admitted: &[Admitted]) {
        let admitted: Vec<_> = admitted.iter().filter(|(_, n, _)| *n > 0).collect();
        for (i, (from, ..)) in admitted.iter().enumerate() {
            let mut writes = 0.0;
            for (to, n, _) in &admitted[i..] {
                writes += f64::from(*n);
                let excess = (f64::from(*n) - burst).max(0.0);
                let allowed = burst + rate * (*to - *from).as_secs_f64() + excess;
                assert!(writes <= allowed + 1e-6, "burst {burst}, rate {rate}: {writes} > {allowed}");
            }
        }
    }

    /// In every closed 60 s window, bytes stay within max(limit, the largest batch).
    fn check_bytes(limit: u64, admitted: &[Admitted]) {
        for (end, (at, _, last)) in admitted.iter().enumerate() {
            let in_window: u64 =
                admitted[..=end].iter().filter(|(t, ..)| *at - *t <= BYTES_WINDOW).map(|(.., b)| *b).sum();
            assert!(in_window <= limit.max(*last), "limit {limit}: {in_window} bytes");
        }
    }
}
