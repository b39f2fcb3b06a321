//! Per-tenant adaptive concurrency for Exchange calls. Exchange caps
//! concurrent requests per tenant (the number is undocumented) and answers
//! 429 or "maximum number of concurrent requests per tenant" beyond it.
//!
//! - Success: the limit grows by one per window of successful calls
//!   (additive increase), and only slowly (one probe per ten windows) once it
//!   has reached the level where Exchange last throttled.
//! - Throttle: the limit drops to the number of calls that were in flight
//!   when Exchange refused one, minus one (the cap just measured), never
//!   below one. A short `Retry-After` delays only the refused call; a long one
//!   (a budget, not a concurrency cap) halves the limit and pauses the tenant.
//!
//! Waiters are served first in, first out, so a large run cannot starve a
//! small one that queued after it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// A `Retry-After` at least this long pauses the whole tenant.
const TENANT_PAUSE: Duration = Duration::from_secs(2);

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
}

impl State {
    fn cap(&self) -> usize {
        self.limit.floor().max(1.0) as usize
    }
    fn paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|p| p > now)
    }
}

#[derive(Clone, Debug)]
pub struct Limiter {
    inner: Arc<Mutex<State>>,
}

pub struct Permit {
    limiter: Limiter,
    done: bool,
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
            })),
        }
    }

    pub fn current_limit(&self) -> usize {
        self.inner.lock().map(|s| s.cap()).unwrap_or(1)
    }

    pub fn inflight(&self) -> usize {
        self.inner.lock().map(|s| s.inflight).unwrap_or(0)
    }

    pub fn throttles(&self) -> u64 {
        self.inner.lock().map(|s| s.throttles).unwrap_or(0)
    }

    pub async fn acquire(&self) -> Permit {
        enum Step {
            Got,
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
                            Step::Got
                        } else {
                            let (tx, rx) = oneshot::channel();
                            s.waiters.push_back(tx);
                            Step::Wait(rx)
                        }
                    }
                }
            };
            match step {
                Step::Got => {
                    return Permit {
                        limiter: self.clone(),
                        done: false,
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
                        return Permit {
                            limiter: self.clone(),
                            done: false,
                        };
                    }
                }
            }
        }
    }

    fn release(&self, outcome: Outcome) {
        let mut s = self.inner.lock().expect("limiter lock");
        let in_flight_before = s.inflight;
        s.inflight = s.inflight.saturating_sub(1);
        match outcome {
            Outcome::Success => {
                let step = 1.0 / s.limit.max(1.0);
                let step = if s.ceiling.is_some_and(|c| s.limit >= c) {
                    step / 10.0
                } else {
                    step
                };
                s.limit = (s.limit + step).min(s.max);
            }
            Outcome::Throttled(retry_after) => {
                s.throttles += 1;
                let measured = (in_flight_before as f64 - 1.0).max(1.0);
                s.limit = s.limit.min(measured).max(1.0);
                if retry_after >= TENANT_PAUSE {
                    s.limit = (s.limit / 2.0).max(1.0);
                    let until = Instant::now() + retry_after;
                    if s.paused_until.is_none_or(|p| p < until) {
                        s.paused_until = Some(until);
                    }
                }
                s.ceiling = Some(s.limit.floor().max(1.0));
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
                self.limiter.release(Outcome::Neutral);
            }
        }
    }
}

enum Outcome {
    Success,
    Throttled(Duration),
    Neutral,
}

impl Permit {
    pub fn success(mut self) {
        self.done = true;
        self.limiter.release(Outcome::Success);
    }
    /// Exchange refused the call: adapt, and tell the caller how long this
    /// call should wait before it is tried again (tenant pauses are applied
    /// by `acquire` itself).
    pub fn throttled(mut self, retry_after: Duration) -> Duration {
        self.done = true;
        self.limiter.release(Outcome::Throttled(retry_after));
        if retry_after >= TENANT_PAUSE {
            Duration::ZERO
        } else {
            retry_after
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.limiter.release(Outcome::Neutral);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grows_on_success_and_learns_the_cap_on_throttle() {
        let l = Limiter::new(4, 32);
        for _ in 0..40 {
            l.acquire().await.success();
        }
        assert!(l.current_limit() > 4);
        let l = Limiter::new(10, 32);
        // Ten in flight, one refused: the cap is nine.
        let permits: Vec<Permit> =
            futures_util::future::join_all((0..10).map(|_| l.acquire())).await;
        let mut it = permits.into_iter();
        let wait = it.next().unwrap().throttled(Duration::from_millis(200));
        assert_eq!(
            wait,
            Duration::from_millis(200),
            "a short Retry-After delays only that call"
        );
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

    #[tokio::test]
    async fn a_long_retry_after_halves_and_pauses_the_tenant() {
        let l = Limiter::new(8, 8);
        let p = l.acquire().await;
        assert_eq!(p.throttled(Duration::from_secs(2)), Duration::ZERO);
        assert!(l.current_limit() <= 1);
        let t = Instant::now();
        l.acquire().await.success();
        assert!(
            t.elapsed() >= Duration::from_millis(1900),
            "the tenant was paused for the Retry-After"
        );
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
