//! Per-tenant adaptive concurrency for Exchange calls (AIMD): the limit grows
//! by one per window of successful calls, halves on a throttle, and a
//! `Retry-After` pauses the whole tenant. Waiters are served first in, first
//! out, so a large run cannot starve a small one that queued after it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

#[derive(Debug)]
struct State {
    limit: f64,
    min: f64,
    max: f64,
    inflight: usize,
    waiters: VecDeque<oneshot::Sender<()>>,
    paused_until: Option<Instant>,
    last_cut: Option<Instant>,
    timer_armed: bool,
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
                min: 1.0,
                max,
                inflight: 0,
                waiters: VecDeque::new(),
                paused_until: None,
                last_cut: None,
                timer_armed: false,
            })),
        }
    }

    pub fn current_limit(&self) -> usize {
        self.inner.lock().map(|s| s.cap()).unwrap_or(1)
    }

    pub fn inflight(&self) -> usize {
        self.inner.lock().map(|s| s.inflight).unwrap_or(0)
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
                    if rx.await.is_ok() {
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
        s.inflight = s.inflight.saturating_sub(1);
        let now = Instant::now();
        match outcome {
            Outcome::Success => {
                let inc = 1.0 / s.limit.max(1.0);
                s.limit = (s.limit + inc).min(s.max);
            }
            Outcome::Throttled(retry_after) => {
                // One cut per half second: a burst of 429s from one overload
                // is one signal, not ten.
                if s.last_cut
                    .is_none_or(|t| now.duration_since(t) > Duration::from_millis(500))
                {
                    s.limit = (s.limit / 2.0).max(s.min);
                    s.last_cut = Some(now);
                }
                let until = now + retry_after;
                if s.paused_until.is_none_or(|p| p < until) {
                    s.paused_until = Some(until);
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
    pub fn throttled(mut self, retry_after: Duration) {
        self.done = true;
        self.limiter.release(Outcome::Throttled(retry_after));
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
    async fn grows_on_success_and_halves_on_throttle() {
        let l = Limiter::new(4, 16);
        for _ in 0..40 {
            l.acquire().await.success();
        }
        assert!(l.current_limit() > 4);
        let before = l.current_limit();
        l.acquire().await.throttled(Duration::from_millis(50));
        assert_eq!(l.current_limit(), (before / 2).max(1));
        // Paused: the next acquire waits at least the Retry-After.
        let t = Instant::now();
        l.acquire().await.success();
        assert!(t.elapsed() >= Duration::from_millis(40));
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
