//! Start-up and shut-down: `Application` binds the listener (port 0 in
//! tests), builds both sides of the state, starts the HTTP server, the
//! worker and the pruner, and stops them gracefully.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::Notify;

use crate::config::Config;
use crate::state::{ApiState, Shared, WorkerState};

/// The running service, before it serves.
pub struct Application {
    port: u16,
    api: Arc<ApiState>,
    worker_state: Arc<WorkerState>,
    server: actix_web::dev::Server,
    worker: tokio::task::JoinHandle<()>,
    stop: Arc<Notify>,
}

impl Application {
    /// Bind, then build. `server.listen` may use port 0; `port()` tells the real one.
    pub async fn build(config: Config) -> Result<Application> {
        let listen = &config.settings.server.listen;
        let listener =
            TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
        Self::build_on(config, listener).await
    }

    /// Build on a listener already bound (the caller knows the port first).
    pub async fn build_on(config: Config, listener: TcpListener) -> Result<Application> {
        let port = listener.local_addr()?.port();
        let (api, worker_state) = crate::state::build(config).await?;
        // SQLite: one process per store, so a lease still held belongs to a
        // predecessor that died; take its work back now, not after the lease.
        match worker_state.store.reclaim_predecessor_leases().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                reclaimed = n,
                "reclaimed the leases of a previous process on this SQLite store"
            ),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot reclaim leases; they will expire")
            }
        }
        let server = crate::routes::server(api.clone(), listener)?;
        let stop = Arc::new(Notify::new());
        let worker = tokio::spawn(crate::worker::run(worker_state.clone(), stop.clone()));
        tokio::spawn(crate::worker::prune_loop(worker_state.shared.clone()));
        tokio::spawn(crate::worker::brake_loop(worker_state.shared.clone()));
        tokio::spawn(crate::doctor::canary::run(
            worker_state.clone(),
            stop.clone(),
        ));
        Ok(Application {
            port,
            api,
            worker_state,
            server,
            worker,
            stop,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serve until SIGTERM/SIGINT.
    pub async fn run_until_stopped(self) -> Result<()> {
        let handle = self.server.handle();
        let shared = self.api.shared.clone();
        let stop = self.stop.clone();
        let grace = shared.settings.server.shutdown_grace;
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown requested: refusing new calls, finishing in-flight work");
            shared.begin_shutdown();
            stop.notify_waiters();
            // Let in-flight HTTP requests finish; new ones get 503 meanwhile.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = tokio::time::timeout(grace, handle.stop(true)).await;
        });
        let res = self.server.await;
        self.stop.notify_waiters();
        let _ = tokio::time::timeout(grace + Duration::from_secs(1), self.worker).await;
        res.context("HTTP server")
    }

    /// Start serving in the background (tests, demo): returns a stopper.
    pub fn spawn(self) -> Running {
        let handle = self.server.handle();
        tokio::spawn(self.server);
        Running {
            port: self.port,
            shared: self.api.shared.clone(),
            worker_state: self.worker_state,
            handle,
            stop: self.stop,
            worker: Some(self.worker),
        }
    }
}

/// A service started with `Application::spawn`.
pub struct Running {
    pub port: u16,
    /// The store, settings and shutdown flag the service runs with.
    pub shared: Arc<Shared>,
    worker_state: Arc<WorkerState>,
    handle: actix_web::dev::ServerHandle,
    stop: Arc<Notify>,
    worker: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Run every task that is due now, and what they enqueue, until none is
    /// left that is due within `horizon` (tests: instead of polling with long
    /// deadlines). The background worker keeps running beside it; leases
    /// keep the two from running the same task.
    pub async fn run_until_idle(&self, horizon: Duration) -> Result<usize> {
        crate::worker::run_until_idle(&self.worker_state, horizon).await
    }

    /// Graceful stop: refuse calls, finish in-flight tasks, release leases.
    pub async fn stop(mut self) {
        self.shared.begin_shutdown();
        self.stop.notify_waiters();
        if let Some(w) = self.worker.take() {
            let _ = tokio::time::timeout(
                self.shared.settings.server.shutdown_grace + Duration::from_secs(1),
                w,
            )
            .await;
        }
        self.handle.stop(true).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
