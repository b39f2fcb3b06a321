//! What the simulated services share: `Inner`, the server's state behind
//! one mutex. The services (`entra`, `exchange`, `arm`, `graph`) import from
//! here and from `types`, never from the facade in `lib.rs`.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use actix_web::{HttpRequest, web};

use crate::keys::Keys;
use crate::state::State;

pub(crate) struct Inner {
    pub(crate) tenant_id: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) msi_header: String,
    pub(crate) http_url: String,
    pub(crate) https_url: String,
    pub(crate) ca_file: PathBuf,
    pub(crate) keys: Keys,
    pub(crate) state: Mutex<State>,
}

impl Inner {
    pub(crate) fn st(&self) -> MutexGuard<'_, State> {
        // A poisoned mutex only means a test thread panicked; the data is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// scheme://host:port of the listener that served `req`.
    pub(crate) fn base_url(&self, req: &HttpRequest) -> String {
        if req.app_config().secure() {
            self.https_url.clone()
        } else {
            self.http_url.clone()
        }
    }

    pub(crate) fn workspace_arm_id(&self) -> String {
        crate::types::workspace_arm_id()
    }

    /// The sim's own tenant, or one it hosts (`SimTenant::host_tenant`).
    pub(crate) fn serves_tenant(&self, tenant: &str) -> bool {
        tenant.eq_ignore_ascii_case(&self.tenant_id)
            || self
                .st()
                .hosted
                .iter()
                .any(|h| h.tenant_id.eq_ignore_ascii_case(tenant))
    }

    /// Every workspace the sim serves: its own first, then the hosted tenants'.
    pub(crate) fn workspaces(&self) -> Vec<String> {
        let mut all = vec![self.workspace_arm_id()];
        all.extend(self.st().hosted.iter().map(|h| h.workspace.clone()));
        all
    }

    /// The served workspace that `path` is under (case-insensitive).
    pub(crate) fn workspace_of(&self, path: &str) -> Option<String> {
        self.workspaces().into_iter().find(|ws| {
            path.get(..ws.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(ws))
                && (path.len() == ws.len() || path.as_bytes()[ws.len()] == b'/')
        })
    }

    pub(crate) async fn apply_latency(&self) {
        let d = self.st().latency;
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

pub(crate) type Shared = web::Data<Inner>;
