//! The process: shared state (`App`), and `Application`, which binds the
//! listener (port 0 in tests), starts the HTTP server, the worker and the
//! pruner, and stops them gracefully.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::{Mutex, Notify};

use crate::auth::InboundAuth;
use crate::config::{Cloud, Settings, Tenant};
use crate::domain::TenantId;
use crate::exchange::ExchangeClient;
use crate::graph::GraphClient;
use crate::identity::{Resource, TokenProvider};
use crate::metrics::Metrics;
use crate::sentinel::arm::ArmClient;
use crate::store::Store;
use crate::upstream::HttpClients;

/// A configured tenant with its credential.
pub struct TenantCtx {
    pub tenant: Tenant,
    pub tokens: TokenProvider,
}

pub struct App {
    pub settings: Settings,
    pub cloud: Cloud,
    pub store: Store,
    pub tenants: HashMap<String, TenantCtx>,
    pub auth: InboundAuth,
    pub exchange: ExchangeClient,
    pub arm: ArmClient,
    pub graph: GraphClient,
    pub metrics: Metrics,
    /// Wakes the worker at once when work is committed.
    pub wake: Notify,
    /// This process, as lease owner.
    pub instance: String,
    pub shutting_down: AtomicBool,
    ready_cache: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl App {
    pub async fn new(settings: Settings) -> Result<App> {
        let cloud = settings.cloud.resolve().map_err(anyhow::Error::msg)?;
        let http = HttpClients::new(cloud.extra_ca_file.as_deref())?;
        let store = Store::connect(&settings.store).await?;
        let metrics = Metrics::new();
        let mut tenants = HashMap::new();
        let parsed = settings.tenants().map_err(anyhow::Error::msg)?;
        for t in &parsed {
            let tokens = TokenProvider::new(t, &cloud, http.entra.clone())
                .with_context(|| format!("credential of tenant {}", t.id))?;
            if t.policy.allowed_domains.is_empty() {
                tracing::warn!(tenant = %t.id, "policy.allowed_domains is empty: every user will be refused");
            }
            tenants.insert(
                t.id.to_string(),
                TenantCtx {
                    tenant: t.clone(),
                    tokens,
                },
            );
        }
        let ids: Vec<TenantId> = parsed.iter().map(|t| t.id.clone()).collect();
        let auth = InboundAuth::new(
            http.entra.clone(),
            &cloud.authority_host,
            &ids,
            &settings.inbound,
        );
        let w = &settings.worker;
        Ok(App {
            exchange: ExchangeClient::new(
                http.exchange.clone(),
                &cloud.exchange_url,
                w.exchange_initial_concurrency,
                w.exchange_max_concurrency,
                w.backoff_scale,
                metrics.clone(),
            ),
            arm: ArmClient::new(
                http.arm.clone(),
                &cloud.arm_url,
                &cloud.sentinel_api_version,
            ),
            graph: GraphClient::new(http.graph.clone(), &cloud.graph_url, metrics.clone()),
            settings,
            cloud,
            store,
            tenants,
            auth,
            metrics,
            wake: Notify::new(),
            instance: format!("{}-{}", hostname(), uuid::Uuid::new_v4().simple()),
            shutting_down: AtomicBool::new(false),
            ready_cache: Mutex::new(None),
        })
    }

    pub fn tenant(&self, id: &TenantId) -> Option<&TenantCtx> {
        self.tenants.get(id.as_str())
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Store reachable, signing keys fetched, every tenant's credential able
    /// to obtain a token. The outcome is cached for 30 s.
    pub async fn ready(&self) -> Result<(), String> {
        let mut cache = self.ready_cache.lock().await;
        if let Some((at, r)) = &*cache
            && at.elapsed() < Duration::from_secs(30)
            && r.is_ok()
        {
            return r.clone();
        }
        let r = self.check_ready().await;
        *cache = Some((Instant::now(), r.clone()));
        r
    }

    async fn check_ready(&self) -> Result<(), String> {
        self.store.ping().await.map_err(|e| format!("store: {e}"))?;
        self.auth
            .warm()
            .await
            .map_err(|e| format!("inbound signing keys: {e}"))?;
        for (id, t) in &self.tenants {
            t.tokens
                .token(Resource::Exchange)
                .await
                .map_err(|e| format!("tenant {id}: {e}"))?;
        }
        Ok(())
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wipehook".into())
}

/// The running service.
pub struct Application {
    port: u16,
    app: Arc<App>,
    server: actix_web::dev::Server,
    worker: tokio::task::JoinHandle<()>,
    stop: Arc<Notify>,
}

impl Application {
    /// Bind, then build. `server.listen` may use port 0; `port()` tells the real one.
    pub async fn build(settings: Settings) -> Result<Application> {
        let listener = TcpListener::bind(&settings.server.listen)
            .with_context(|| format!("cannot listen on {}", settings.server.listen))?;
        Self::build_on(settings, listener).await
    }

    /// Build on a listener already bound (the caller knows the port first).
    pub async fn build_on(settings: Settings, listener: TcpListener) -> Result<Application> {
        let port = listener.local_addr()?.port();
        let app = Arc::new(App::new(settings).await?);
        let server = crate::routes::server(app.clone(), listener)?;
        let stop = Arc::new(Notify::new());
        let worker = tokio::spawn(crate::worker::run(app.clone(), stop.clone()));
        tokio::spawn(crate::worker::prune_loop(app.clone()));
        Ok(Application {
            port,
            app,
            server,
            worker,
            stop,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    /// Serve until SIGTERM/SIGINT (or the returned handle's stop).
    pub async fn run_until_stopped(self) -> Result<()> {
        let handle = self.server.handle();
        let app = self.app.clone();
        let stop = self.stop.clone();
        let grace = app.settings.server.shutdown_grace;
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown requested: refusing new calls, finishing in-flight work");
            app.shutting_down.store(true, Ordering::SeqCst);
            stop.notify_waiters();
            // Let in-flight HTTP requests finish; new ones get 503 meanwhile.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = tokio::time::timeout(grace, handle.stop(true)).await;
        });
        let server = self.server;
        let worker = self.worker;
        let res = server.await;
        self.stop.notify_waiters();
        let _ = tokio::time::timeout(grace + Duration::from_secs(1), worker).await;
        res.context("HTTP server")
    }

    /// Start serving in the background (tests, demo): returns a stopper.
    pub fn spawn(self) -> Running {
        let handle = self.server.handle();
        let app = self.app.clone();
        let stop = self.stop.clone();
        let port = self.port;
        tokio::spawn(self.server);
        Running {
            port,
            app,
            handle,
            stop,
            worker: Some(self.worker),
        }
    }
}

/// A service started with `Application::spawn`.
pub struct Running {
    pub port: u16,
    pub app: Arc<App>,
    handle: actix_web::dev::ServerHandle,
    stop: Arc<Notify>,
    worker: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Graceful stop: refuse calls, finish in-flight tasks, release leases.
    pub async fn stop(mut self) {
        self.app.shutting_down.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
        if let Some(w) = self.worker.take() {
            let _ = tokio::time::timeout(
                self.app.settings.server.shutdown_grace + Duration::from_secs(1),
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
