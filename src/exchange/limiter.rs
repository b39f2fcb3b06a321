//! Per-tenant adaptive concurrency for Exchange calls. Exchange caps
//! concurrent requests per tenant (the number is undocumented) and answers
//! 429 or "maximum number of concurrent requests per tenant" beyond it; a
//! flaky Exchange also answers 429 at random, whatever the load.
//!
//! - Success: the limit grows by one per window of successful calls
//!   (additive increase), and only slowly (one probe per ten windows) once it
//!   has reached the level where Exchange last throttled; that ceiling is
//!   forgotten after `CEILING_TTL` without a cap signal.
//! - The concurrency message is a cap: the limit drops to the number of calls
//!   that were in flight when Exchange refused one, minus one, never below one.
//! - A 429 is a cap only when it correlates with the number in flight: a call
//!   refused at level n (n calls in flight as it started) while a call was
//!   admitted at level n or above within `NOISE_WINDOW` (or a lone call, n = 1)
//!   is noise, and changes nothing; three refusals no admission contradicts
//!   are a cap: the lowest of their levels minus one, but at most one step
//!   below the current limit per confirmation.
//! - A short `Retry-After` delays only the refused call; a long one (a budget,
//!   not a concurrency cap) halves the limit and pauses the tenant.
//!
//! Waiters are served first in, first out, so a large run cannot starve a
//! small one that queued after it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// A `Retry-After` at least this long pauses the whole tenant.
const TENANT_PAUSE: Duration = Duration::from_secs(2);
/// An admission at a level this recent explains a 429 at or below it as noise.
const NOISE_WINDOW: Duration = Duration::from_secs(30);
/// A learned ceiling (slow probing above it) lasts this long without a new
/// cap signal.
const CEILING_TTL: Duration = Duration::from_secs(60);
/// A call is slow (and gives its slot back) after this many times the
/// tenant's usual latency, and never before `SLOW_FLOOR`.
const SLOW_FACTOR: f64 = 8.0;
const SLOW_FLOOR: Duration = Duration::from_secs(1);
/// Unexplained 429s needed before a cap is learned from them.
const SUSPECTS_FOR_A_CAP: usize = 3;

#[derive(Debug)]
struct State {
    limit: f64,
    max: f64,
    /// The limit after the last throttle: growth above it is a slow probe.
    ceiling: Option<f64>,
    inflight: usize,
    waiters: VecDeque<oneshot::Sender<()>>,
    paused_until: Option<Instant>,
    timer_armed: bool,
    throttles: u64,
    /// 429s taken as noise (an admission at their level or above was recent).
    noise: u64,
    /// When a call that started at level i + 1 last succeeded.
    admitted: Vec<Option<Instant>>,
    /// Recent 429s no admission explains: (level, when).
    suspects: Vec<(usize, Instant)>,
    /// When the ceiling was last set.
    ceiling_at: Option<Instant>,
    /// Moving average of successful calls' latency (seconds).
    latency: Option<f64>,
}

impl State {
    fn cap(&self) -> usize {
        self.limit.floor().max(1.0) as usize
    }
    fn paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|p| p > now)
    }
    /// A call that started at `level` or above was admitted recently.
    fn admitted_at_or_above(&self, level: usize, now: Instant) -> bool {
        self.admitted
            .iter()
            .skip(level.saturating_sub(1))
            .flatten()
            .any(|t| now.duration_since(*t) < NOISE_WINDOW)
    }
    fn learn_cap(&mut self, level: usize, now: Instant) {
        let measured = (level as f64 - 1.0).max(1.0);
        self.limit = self.limit.min(measured).max(1.0);
        self.ceiling = Some(self.limit.floor().max(1.0));
        self.ceiling_at = Some(now);
        self.suspects.clear();
    }
}

#[derive(Clone, Debug)]
pub struct Limiter {
    inner: Arc<Mutex<State>>,
}

pub struct Permit {
    limiter: Limiter,
    done: bool,
    /// Calls in flight (this one included) when it was granted.
    level: usize,
}

impl Limiter {
    pub fn new(initial: usize, max: usize) -> Limiter {
        let max = max.max(1) as f64;
        Limiter {
            inner: Arc::new(Mutex::new(State {
                limit: (initial.max(1) as f64).min(max),
                max,
                ceiling: None,
                inflight: 0,
                waiters: VecDeque::new(),
                paused_until: None,
                timer_armed: false,
                throttles: 0,
                noise: 0,
                admitted: vec![None; max as usize],
                suspects: Vec::new(),
                ceiling_at: None,
                latency: None,
            })),
        }
    }

    pub fn current_limit(&self) -> usize {
        self.inner.lock().map(|s| s.cap()).unwrap_or(1)
    }

    pub fn inflight(&self) -> usize {
        self.inner.lock().map(|s| s.inflight).unwrap_or(0)
    }

    /// Refusals taken as a cap signal (the concurrency message, correlated
    /// or long-`Retry-After` 429s).
    pub fn throttles(&self) -> u64 {
        self.inner.lock().map(|s| s.throttles).unwrap_or(0)
    }

    /// 429s taken as noise.
    pub fn noise(&self) -> u64 {
        self.inner.lock().map(|s| s.noise).unwrap_or(0)
    }

    /// After how long a call in flight is taken as hung and gives its slot
    /// back: `SLOW_FACTOR` times the usual latency of this tenant's calls
    /// (2 s before any is known), at least `SLOW_FLOOR`.
    pub fn slow_after(&self) -> Duration {
        let usual = self.inner.lock().ok().and_then(|s| s.latency);
        match usual {
            Some(l) => Duration::from_secs_f64(l * SLOW_FACTOR).max(SLOW_FLOOR),
            None => 2 * SLOW_FLOOR,
        }
    }

    pub async fn acquire(&self) -> Permit {
        enum Step {
            Got(usize),
            Sleep(Instant),
            Wait(oneshot::Receiver<()>),
        }
        loop {
            let step = {
                let mut s = self.inner.lock().expect("limiter lock");
                let now = Instant::now();
                match s.paused_until {
                    Some(p) if p > now && s.waiters.is_empty() => Step::Sleep(p),
                    _ => {
                        if s.paused_until.is_some_and(|p| p <= now) {
                            s.paused_until = None;
                        }
                        if !s.paused(now) && s.waiters.is_empty() && s.inflight < s.cap() {
                            s.inflight += 1;
                            Step::Got(s.inflight)
                        } else {
                            let (tx, rx) = oneshot::channel();
                            s.waiters.push_back(tx);
                            Step::Wait(rx)
                        }
                    }
                }
            };
            match step {
                Step::Got(level) => {
                    return Permit {
                        limiter: self.clone(),
                        done: false,
                        level,
                    };
                }
                Step::Sleep(p) => tokio::time::sleep_until(p.into()).await,
                Step::Wait(rx) => {
                    // If this future is dropped after the grant was sent but
                    // before it was received, the guard gives the slot back.
                    let mut waiting = Waiting {
                        rx: Some(rx),
                        limiter: self.clone(),
                    };
                    let granted = match waiting.rx.as_mut() {
                        Some(rx) => rx.await.is_ok(),
                        None => false,
                    };
                    waiting.rx = None;
                    if granted {
                        let level = self.inflight();
                        return Permit {
                            limiter: self.clone(),
                            done: false,
                            level,
                        };
                    }
                }
            }
        }
    }

    fn release(&self, level: usize, outcome: Outcome) {
        let mut s = self.inner.lock().expect("limiter lock");
        let in_flight_before = s.inflight;
        s.inflight = s.inflight.saturating_sub(1);
        let now = Instant::now();
        if s.ceiling_at
            .is_some_and(|t| now.duration_since(t) > CEILING_TTL)
        {
            s.ceiling = None;
            s.ceiling_at = None;
        }
        // The concurrency message speaks of as many as were in flight when
        // the call started or when it was refused, whichever is more.
        let refused_at = level.max(in_flight_before).max(1);
        match outcome {
            Outcome::Success => {
                if let Some(slot) = s.admitted.get_mut(level.max(1) - 1) {
                    *slot = Some(now);
                }
                // An admission at a level contradicts refusals at or below it.
                s.suspects.retain(|(l, _)| *l > level);
                let step = 1.0 / s.limit.max(1.0);
                let step = if s.ceiling.is_some_and(|c| s.limit >= c) {
                    step / 10.0
                } else {
                    step
                };
                s.limit = (s.limit + step).min(s.max);
            }
            Outcome::ConcurrencyCap => {
                s.throttles += 1;
                s.learn_cap(refused_at, now);
            }
            Outcome::Throttled(retry_after) => {
                if retry_after >= TENANT_PAUSE {
                    // A budget: slow the whole tenant down.
                    s.throttles += 1;
                    s.limit = (s.limit / 2.0).max(1.0);
                    s.ceiling = Some(s.limit.floor().max(1.0));
                    s.ceiling_at = Some(now);
                    let until = now + retry_after;
                    if s.paused_until.is_none_or(|p| p < until) {
                        s.paused_until = Some(until);
                    }
                } else if level <= 1 || s.admitted_at_or_above(level, now) {
                    // A lone call refused, or one at a level Exchange
                    // admitted lately: not a concurrency cap.
                    s.noise += 1;
                } else {
                    s.suspects
                        .retain(|(_, t)| now.duration_since(*t) < NOISE_WINDOW);
                    s.suspects.push((level, now));
                    if s.suspects.len() >= SUSPECTS_FOR_A_CAP {
                        // At most one step down per confirmation: a cap
                        // measured from 429s is an inference, not a message.
                        let lowest = s.suspects.iter().map(|(l, _)| *l).min().unwrap_or(1);
                        let level = lowest.max(s.cap());
                        s.throttles += 1;
                        s.learn_cap(level, now);
                    }
                }
            }
            Outcome::Neutral => {}
        }
        self.grant(&mut s);
    }

    fn grant(&self, s: &mut State) {
        let now = Instant::now();
        if s.paused(now) {
            if !s.timer_armed {
                s.timer_armed = true;
                let until = s.paused_until.unwrap_or(now);
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(until.into()).await;
                    let mut s = me.inner.lock().expect("limiter lock");
                    s.timer_armed = false;
                    me.grant(&mut s);
                });
            }
            return;
        }
        s.paused_until = None;
        while s.inflight < s.cap() {
            let Some(tx) = s.waiters.pop_front() else {
                break;
            };
            if tx.send(()).is_ok() {
                s.inflight += 1;
            }
        }
    }
}

struct Waiting {
    rx: Option<oneshot::Receiver<()>>,
    limiter: Limiter,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.limiter.release(0, Outcome::Neutral);
            }
        }
    }
}

enum Outcome {
    Success,
    /// Exchange said its concurrency cap was reached.
    ConcurrencyCap,
    /// A 429 with this `Retry-After`.
    Throttled(Duration),
    Neutral,
}

impl Permit {
    pub fn success(mut self) {
        self.done = true;
        self.limiter.release(self.level, Outcome::Success);
    }
    /// A success that took `took`: also teaches the limiter the usual latency.
    pub fn success_after(self, took: Duration) {
        if let Ok(mut s) = self.limiter.inner.lock() {
            let t = took.as_secs_f64();
            s.latency = Some(match s.latency {
                Some(l) => 0.8 * l + 0.2 * t,
                None => t,
            });
        }
        self.success();
    }
    /// The call is hung: give its slot back now (its answer, when it comes,
    /// teaches the limiter nothing).
    pub fn detach(mut self) {
        self.done = true;
        self.limiter.release(self.level, Outcome::Neutral);
    }
    /// Exchange refused the call with a 429: adapt, and tell the caller how
    /// long this call should wait before it is tried again (tenant pauses
    /// are applied by `acquire` itself).
    pub fn throttled(mut self, retry_after: Duration) -> Duration {
        self.done = true;
        self.limiter
            .release(self.level, Outcome::Throttled(retry_after));
        if retry_after >= TENANT_PAUSE {
            Duration::ZERO
        } else {
            retry_after
        }
    }
    /// Exchange refused the call with its concurrency message: a cap. The
    /// call waits `retry_after` (its own, not the tenant's).
    pub fn concurrency_capped(mut self, retry_after: Duration) -> Duration {
        self.done = true;
        self.limiter.release(self.level, Outcome::ConcurrencyCap);
        retry_after
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.limiter.release(self.level, Outcome::Neutral);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grows_on_success_and_learns_the_cap_from_the_concurrency_message() {
        let l = Limiter::new(4, 32);
        for _ in 0..40 {
            l.acquire().await.success();
        }
        assert!(l.current_limit() > 4);
        let l = Limiter::new(10, 32);
        // Ten in flight, one refused with the concurrency message: the cap is nine.
        let permits: Vec<Permit> =
            futures_util::future::join_all((0..10).map(|_| l.acquire())).await;
        let mut it = permits.into_iter();
        let wait = it
            .next()
            .unwrap()
            .concurrency_capped(Duration::from_millis(200));
        assert_eq!(wait, Duration::from_millis(200), "only that call waits");
        assert_eq!(l.current_limit(), 9);
        for p in it {
            p.success();
        }
        // Above the measured cap, growth is a slow probe.
        for _ in 0..9 {
            l.acquire().await.success();
        }
        assert_eq!(l.current_limit(), 9);
    }

    /// Four at a time, one call in three refused with a short 429 whatever
    /// the load (a flaky Exchange): the limit stays, the 429s count as noise.
    #[tokio::test]
    async fn random_429s_are_noise_not_a_cap() {
        let l = Limiter::new(4, 4);
        let mut refused = 0;
        for round in 0..30 {
            let permits: Vec<Permit> =
                futures_util::future::join_all((0..l.current_limit()).map(|_| l.acquire())).await;
            for (i, p) in permits.into_iter().enumerate() {
                if (round * 4 + i) % 3 == 0 {
                    assert_eq!(
                        p.throttled(Duration::from_millis(1500)),
                        Duration::from_millis(1500),
                        "a short Retry-After delays that call only"
                    );
                    refused += 1;
                } else {
                    p.success();
                }
            }
        }
        assert!(refused >= 30);
        assert_eq!(l.current_limit(), 4, "noise learned no cap");
        assert!(l.noise() >= 28, "noise: {}", l.noise());
        assert!(l.throttles() <= 1, "cap signals: {}", l.throttles());
    }

    /// A real cap of three answered with 429s: every call that starts with
    /// three in flight is refused, none above three is ever admitted.
    #[tokio::test]
    async fn correlated_429s_are_a_cap() {
        let l = Limiter::new(6, 8);
        for _ in 0..20 {
            let permits: Vec<Permit> =
                futures_util::future::join_all((0..l.current_limit()).map(|_| l.acquire())).await;
            for p in permits {
                if p.level > 3 {
                    p.throttled(Duration::from_millis(100));
                } else {
                    p.success();
                }
            }
        }
        assert_eq!(l.current_limit(), 3, "learned the cap");
    }

    /// A cap learned from two unexplained 429s (noise that happened to
    /// come first) is not kept: success grows the limit back.
    #[tokio::test]
    async fn recovers_after_the_noise_stops() {
        let l = Limiter::new(4, 8);
        let permits: Vec<Permit> =
            futures_util::future::join_all((0..4).map(|_| l.acquire())).await;
        let mut it = permits.into_iter().rev();
        // The three highest levels refused before any admission: a cap, as
        // far as the limiter can tell.
        for _ in 0..3 {
            it.next().unwrap().throttled(Duration::from_millis(100));
        }
        drop(it);
        let low = l.current_limit();
        assert!(low < 4, "two unexplained refusals: a cap ({low})");
        for _ in 0..200 {
            let permits: Vec<Permit> =
                futures_util::future::join_all((0..l.current_limit()).map(|_| l.acquire())).await;
            for p in permits {
                p.success();
            }
        }
        assert!(l.current_limit() >= 4, "grew back: {}", l.current_limit());
    }

    #[tokio::test]
    async fn a_long_retry_after_halves_and_pauses_the_tenant() {
        let l = Limiter::new(8, 8);
        let p = l.acquire().await;
        assert_eq!(p.throttled(Duration::from_secs(2)), Duration::ZERO);
        assert!(l.current_limit() <= 4, "halved");
        let t = Instant::now();
        l.acquire().await.success();
        assert!(
            t.elapsed() >= Duration::from_millis(1900),
            "the tenant was paused for the Retry-After"
        );
    }

    /// A hung call gives its slot back: the next call starts.
    #[tokio::test]
    async fn a_detached_call_frees_its_slot() {
        let l = Limiter::new(1, 1);
        for _ in 0..5 {
            l.acquire().await.success_after(Duration::from_millis(100));
        }
        assert_eq!(l.slow_after(), SLOW_FLOOR, "8 x 100 ms, at least the floor");
        let hung = l.acquire().await;
        assert_eq!(l.inflight(), 1);
        hung.detach();
        let next = tokio::time::timeout(Duration::from_secs(1), l.acquire())
            .await
            .expect("the slot was given back");
        next.success();
    }

    #[tokio::test]
    async fn never_exceeds_limit_and_serves_fifo() {
        let l = Limiter::new(2, 2);
        let a = l.acquire().await;
        let b = l.acquire().await;
        let order = Arc::new(Mutex::new(vec![]));
        let mut hs = vec![];
        for i in 0..3 {
            let l2 = l.clone();
            let o = order.clone();
            hs.push(tokio::spawn(async move {
                let p = l2.acquire().await;
                o.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(5)).await;
                p.success();
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(l.inflight(), 2);
        drop(a);
        drop(b);
        for h in hs {
            h.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    }
}
