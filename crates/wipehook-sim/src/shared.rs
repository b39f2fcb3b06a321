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

    pub(crate) async fn apply_latency(&self) {
        let d = self.st().latency;
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

pub(crate) type Shared = web::Data<Inner>;
