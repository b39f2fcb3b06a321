//! What the two sides of the process hold. HTTP handlers get `ApiState`,
//! which has no Exchange, ARM or Graph client: "no handler calls an
//! upstream" is a fact of the types, not a convention. The worker gets
//! `WorkerState`, which has them. Both share `Shared`: settings, the parsed
//! tenants, the store, metrics, and the worker's wake-up.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::{Mutex, Notify};

use crate::auth::InboundAuth;
use crate::config::{Cloud, Config, Settings, Tenant};
use crate::domain::TenantId;
use crate::exchange::{ExchangeClient, LimitsView};
use crate::graph::GraphClient;
use crate::identity::{Resource, TokenProvider};
use crate::metrics::Metrics;
use crate::sentinel::arm::ArmClient;
use crate::store::Store;
use crate::upstream::HttpClients;

/// What both sides share.
pub struct Shared {
    pub settings: Settings,
    pub cloud: Cloud,
    pub store: Store,
    /// The configured tenants, parsed once.
    pub tenants: HashMap<TenantId, Tenant>,
    pub metrics: Metrics,
    /// Wakes the worker at once when work is committed.
    pub wake: Notify,
    /// This process, as lease owner.
    pub instance: String,
    /// The canary's latest results (written by the worker side, read by readiness).
    pub canary: crate::doctor::canary::CanaryBoard,
    /// The kill switch as this process last saw it (the Exchange client
    /// checks it before every wipe).
    pub brake: crate::upstream::Brake,
    shutting_down: AtomicBool,
}

impl Shared {
    pub fn tenant(&self, id: &TenantId) -> Option<&Tenant> {
        self.tenants.get(id)
    }
    /// The tenant's hold expiry (falls back to the global one).
    pub fn hold_expiry(&self, id: &TenantId) -> Duration {
        self.tenant(id)
            .map(|t| t.policy.hold_expiry)
            .unwrap_or(self.settings.policy.hold_expiry)
    }
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
    /// Refuse new calls from now on; in-flight work finishes.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }
}

/// The HTTP side: authentication, the store, and read-only views.
pub struct ApiState {
    pub shared: Arc<Shared>,
    pub auth: InboundAuth,
    /// The Exchange limiter's current limits (read-only, for `/metrics`).
    pub exchange_limits: LimitsView,
    /// One credential per tenant: readiness asks each for a token.
    tokens: Vec<(TenantId, Arc<TokenProvider>)>,
    ready_cache: Mutex<Option<(Instant, Result<(), String>)>>,
    /// Turns for reading a body larger than 64 KiB (`server.max_large_bodies`).
    pub large_bodies: tokio::sync::Semaphore,
}

impl Deref for ApiState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl ApiState {
    /// Store reachable, signing keys fetched, every tenant's credential able
    /// to obtain a token. A success is cached for 30 s.
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
        for (id, t) in &self.tokens {
            t.token(Resource::Exchange)
                .await
                .map_err(|e| format!("tenant {id}: {e}"))?;
        }
        Ok(())
    }
}

/// A configured tenant with its credential.
pub struct TenantCtx {
    pub tenant: Tenant,
    pub tokens: Arc<TokenProvider>,
}

/// The worker side: the upstream clients and each tenant's credential.
pub struct WorkerState {
    pub shared: Arc<Shared>,
    pub tenants: HashMap<TenantId, TenantCtx>,
    pub exchange: ExchangeClient,
    pub arm: ArmClient,
    pub graph: GraphClient,
}

impl Deref for WorkerState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl WorkerState {
    pub fn tenant_ctx(&self, id: &TenantId) -> Option<&TenantCtx> {
        self.tenants.get(id)
    }
}

/// Build both sides from the validated configuration: connect (and migrate)
/// the store, build one credential per tenant and the clients.
pub async fn build(config: Config) -> Result<(Arc<ApiState>, Arc<WorkerState>)> {
    let Config {
        settings,
        cloud,
        tenants: parsed,
    } = config;
    let http = HttpClients::new(cloud.extra_ca_file.as_deref())?;
    let store = Store::connect(&settings.store).await?;
    let metrics = Metrics::new();
    let mut tenants = HashMap::new();
    let mut contexts = HashMap::new();
    let mut tokens = vec![];
    for t in parsed {
        let provider = Arc::new(
            TokenProvider::new(&t, &cloud, http.entra.clone())
                .with_context(|| format!("credential of tenant {}", t.id))?,
        );
        if t.policy.allowed_domains.is_empty() {
            tracing::warn!(tenant = %t.id, "policy.allowed_domains is empty: every user will be refused");
        }
        tokens.push((t.id.clone(), provider.clone()));
        contexts.insert(
            t.id.clone(),
            TenantCtx {
                tenant: t.clone(),
                tokens: provider,
            },
        );
        tenants.insert(t.id.clone(), t);
    }
    let ids: Vec<(TenantId, Vec<String>)> = tenants
        .values()
        .map(|t| (t.id.clone(), t.allowed_callers.clone()))
        .collect();
    let auth = InboundAuth::new(
        http.entra.clone(),
        &cloud.authority_host,
        &ids,
        &settings.inbound,
    );
    let w = &settings.worker;
    let brake = crate::upstream::Brake::default();
    brake.set(settings.guard.kill_switch || store.kill_switch().await?.engaged);
    if settings.guard.kill_switch {
        tracing::warn!(
            kill_switch = true,
            by = "the configuration (guard.kill_switch = true)",
            "kill switch engaged by the configuration: no wipe is sent"
        );
    }
    let exchange = ExchangeClient::new(
        http.exchange.clone(),
        &cloud.exchange_url,
        w.exchange_initial_concurrency,
        w.exchange_max_concurrency,
        w.backoff_scale,
        metrics.clone(),
    )
    .with_brake(brake.clone());
    let arm = ArmClient::new(
        http.arm.clone(),
        &cloud.arm_url,
        &cloud.sentinel_api_version,
    );
    let graph = GraphClient::new(http.graph.clone(), &cloud.graph_url, metrics.clone());
    let shared = Arc::new(Shared {
        settings,
        cloud,
        store,
        tenants,
        metrics,
        wake: Notify::new(),
        instance: format!("{}-{}", hostname(), uuid::Uuid::new_v4().simple()),
        canary: Default::default(),
        brake,
        shutting_down: AtomicBool::new(false),
    });
    let api = Arc::new(ApiState {
        shared: shared.clone(),
        auth,
        exchange_limits: exchange.limits(),
        tokens,
        ready_cache: Mutex::new(None),
        large_bodies: tokio::sync::Semaphore::new(shared.settings.server.max_large_bodies.max(1)),
    });
    let worker = Arc::new(WorkerState {
        shared,
        tenants: contexts,
        exchange,
        arm,
        graph,
    });
    Ok((api, worker))
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wipehook".into())
}
