//! Who may do what in the simulated tenant: the Entra directory's app
//! registrations, service principals and app role assignments (what Graph's
//! `applications` and `servicePrincipals` answer, and the `roles` claim of
//! every token the sim issues), Azure RBAC role assignments (what ARM's
//! `roleAssignments` answers, and what ARM enforces), and Exchange RBAC (the
//! management roles assigned to an app, what `Get-ManagementRoleAssignment`
//! and `Get-ManagementRoleEntry` answer, and which cmdlets InvokeCommand
//! runs). The defaults are a correctly set-up tenant (docs/setup.md of
//! wipehook, steps 1 to 5); `SimTenant`'s knobs take pieces away.
//!
//! Identifiers are Microsoft's (the team's notes): the Office 365 Exchange
//! Online and Microsoft Graph resource app ids, `Exchange.ManageAsApp`
//! (exchange-online.md §5.1), `User.Read.All` and `Application.Read.All`
//! (public role-id tables; the same in every tenant), and the built-in
//! Azure role ids of the Microsoft Sentinel roles (Azure built-in roles).

use uuid::Uuid;

use crate::types::{DEFAULT_CLIENT_ID, DEFAULT_MANAGED_IDENTITY_CLIENT_ID, SUBSCRIPTION_ID};

pub(crate) const EXCHANGE_APP_ID: &str = "00000002-0000-0ff1-ce00-000000000000";
pub(crate) const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
pub(crate) const EXCHANGE_MANAGE_AS_APP: (&str, &str) = (
    "dc50a0fb-09a3-484d-be87-e023b12c6440",
    "Exchange.ManageAsApp",
);
pub(crate) const USER_READ_ALL: (&str, &str) =
    ("df021288-bdef-4463-88db-98f22de89214", "User.Read.All");
/// The Defender incident mirror's permission (the id is unverified, see
/// wipehook's `doctor::outbound::MIRROR_ROLE`).
/// The account-step permissions (ids as the sim publishes them).
pub(crate) const USER_REVOKE_SESSIONS_ALL: (&str, &str) = (
    "77f3a031-c388-4f99-b373-dc68676a979e",
    "User.RevokeSessions.All",
);
pub(crate) const USER_ENABLE_DISABLE_ACCOUNT_ALL: (&str, &str) = (
    "3011c876-62b7-4ada-afa2-506cbbecc68c",
    "User.EnableDisableAccount.All",
);
pub(crate) const IDENTITY_RISKY_USER_READWRITE_ALL: (&str, &str) = (
    "656f6061-f9fe-4807-9708-6a2e0934df76",
    "IdentityRiskyUser.ReadWrite.All",
);
pub(crate) const SECURITY_INCIDENT_READWRITE_ALL: (&str, &str) = (
    "34bf0e97-1971-4929-b999-9e2442d941d7",
    "SecurityIncident.ReadWrite.All",
);
pub(crate) const APPLICATION_READ_ALL: (&str, &str) = (
    "9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30",
    "Application.Read.All",
);

/// Built-in Azure roles the sim knows, with what they allow on a Sentinel
/// workspace: (role definition id, name, read incidents, write incidents
/// and comments). Every one of them also reads role assignments
/// (`Microsoft.Authorization/*/read`).
pub(crate) const AZURE_ROLES: [(&str, &str, bool, bool); 5] = [
    (
        "8d289c81-5878-46d4-8554-54e1e3d8b5cb",
        "Microsoft Sentinel Reader",
        true,
        false,
    ),
    (
        "3e150937-b8fe-4cfb-8069-0eaf05ecd056",
        "Microsoft Sentinel Responder",
        true,
        true,
    ),
    (
        "ab8e14d6-4a74-4a29-9ba8-549422addade",
        "Microsoft Sentinel Contributor",
        true,
        true,
    ),
    (
        "b24988ac-6180-42a0-ab88-20f7382dd24c",
        "Contributor",
        true,
        true,
    ),
    ("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "Owner", true, true),
];
pub(crate) const SENTINEL_RESPONDER: &str = "3e150937-b8fe-4cfb-8069-0eaf05ecd056";

#[derive(Clone, Debug)]
pub(crate) struct AppRole {
    pub id: String,
    pub value: String,
    pub allowed_member_types: Vec<String>,
    pub is_enabled: bool,
}

impl AppRole {
    fn application(id: &str, value: &str) -> AppRole {
        AppRole {
            id: id.to_string(),
            value: value.to_string(),
            allowed_member_types: vec!["Application".into()],
            is_enabled: true,
        }
    }
}

/// An app registration (`application`).
#[derive(Clone, Debug)]
pub(crate) struct Application {
    pub object_id: String,
    pub app_id: String,
    pub display_name: String,
    pub identifier_uris: Vec<String>,
    pub app_roles: Vec<AppRole>,
    /// `api.requestedAccessTokenVersion` (None: v1 tokens).
    pub token_version: Option<i64>,
}

/// A service principal (an app's instance in the tenant, or a managed identity).
#[derive(Clone, Debug)]
pub(crate) struct ServicePrincipal {
    pub object_id: String,
    pub app_id: String,
    pub display_name: String,
    /// "Application" | "ManagedIdentity"
    pub sp_type: String,
    pub app_roles: Vec<AppRole>,
    pub assignment_required: bool,
}

/// `appRoleAssignment`: `principal_id` holds `app_role_id` of `resource_id`.
#[derive(Clone, Debug)]
pub(crate) struct AppRoleAssignment {
    pub id: String,
    pub principal_id: String,
    pub resource_id: String,
    pub app_role_id: String,
}

/// An Azure RBAC role assignment.
#[derive(Clone, Debug)]
pub(crate) struct RoleAssignment {
    pub name: String,
    pub scope: String,
    pub role_definition: String,
    pub principal_id: String,
}

/// An Exchange management role and its entries (cmdlet, parameters).
#[derive(Clone, Debug)]
pub(crate) struct ExoRole {
    pub name: String,
    pub entries: Vec<(String, Vec<String>)>,
}

/// An Exchange management role assignment to an app (through a role group).
#[derive(Clone, Debug)]
pub(crate) struct ExoAssignment {
    pub role: String,
    pub role_group: String,
    /// The assignee's Entra object id (the Exchange service principal's ObjectId).
    pub principal_id: String,
    pub custom_recipient_write_scope: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Directory {
    pub applications: Vec<Application>,
    pub service_principals: Vec<ServicePrincipal>,
    pub app_role_assignments: Vec<AppRoleAssignment>,
    pub role_assignments: Vec<RoleAssignment>,
    pub exo_roles: Vec<ExoRole>,
    pub exo_assignments: Vec<ExoAssignment>,
}

/// The object id of the service principal a token for `app_id` is issued to.
pub(crate) fn principal_of(app_id: &str) -> String {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("sp:{app_id}").as_bytes()).to_string()
}

fn id_for(seed: &str) -> String {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, seed.as_bytes()).to_string()
}

/// The Exchange role wipehook's setup guide builds (step 4), and the optional
/// read-only role that lets `wipehook doctor` read it.
pub(crate) const WIPE_ROLE: &str = "wipehook Mobile Wipe";
pub(crate) const RBAC_READ_ROLE: &str = "wipehook RBAC Read";
const VIEW_RECIPIENTS_ROLE: &str = "View-Only Recipients";
const ROLE_GROUP: &str = "wipehook containment";

fn params(p: &[&str]) -> Vec<String> {
    p.iter().map(|s| s.to_string()).collect()
}

impl Directory {
    /// A tenant set up as wipehook's guide says: wipehook's identity (the
    /// app registration with a secret, and the default managed identity)
    /// holds Exchange.ManageAsApp, User.Read.All and Application.Read.All,
    /// Microsoft Sentinel Responder on the workspace, and the Exchange role
    /// group with the three mobile cmdlets (plus the two RBAC reads).
    pub fn seeded(workspace: &str) -> Directory {
        let mut d = Directory::default();
        let exo = ServicePrincipal {
            object_id: id_for("sp:exchange"),
            app_id: EXCHANGE_APP_ID.into(),
            display_name: "Office 365 Exchange Online".into(),
            sp_type: "Application".into(),
            app_roles: vec![AppRole::application(
                EXCHANGE_MANAGE_AS_APP.0,
                EXCHANGE_MANAGE_AS_APP.1,
            )],
            assignment_required: false,
        };
        let graph = ServicePrincipal {
            object_id: id_for("sp:graph"),
            app_id: GRAPH_APP_ID.into(),
            display_name: "Microsoft Graph".into(),
            sp_type: "Application".into(),
            app_roles: vec![
                AppRole::application(USER_READ_ALL.0, USER_READ_ALL.1),
                AppRole::application(APPLICATION_READ_ALL.0, APPLICATION_READ_ALL.1),
                AppRole::application(
                    SECURITY_INCIDENT_READWRITE_ALL.0,
                    SECURITY_INCIDENT_READWRITE_ALL.1,
                ),
                AppRole::application(USER_REVOKE_SESSIONS_ALL.0, USER_REVOKE_SESSIONS_ALL.1),
                AppRole::application(
                    USER_ENABLE_DISABLE_ACCOUNT_ALL.0,
                    USER_ENABLE_DISABLE_ACCOUNT_ALL.1,
                ),
                AppRole::application(
                    IDENTITY_RISKY_USER_READWRITE_ALL.0,
                    IDENTITY_RISKY_USER_READWRITE_ALL.1,
                ),
            ],
            assignment_required: false,
        };
        let (exo_id, graph_id) = (exo.object_id.clone(), graph.object_id.clone());
        d.service_principals.push(exo);
        d.service_principals.push(graph);
        d.exo_roles = vec![
            ExoRole {
                name: WIPE_ROLE.into(),
                entries: vec![
                    (
                        "Clear-MobileDevice".into(),
                        params(&[
                            "AccountOnly",
                            "Cancel",
                            "Confirm",
                            "Identity",
                            "NotificationEmailAddresses",
                        ]),
                    ),
                    (
                        "Get-MobileDevice".into(),
                        params(&["Identity", "Mailbox", "ResultSize"]),
                    ),
                    (
                        "Get-MobileDeviceStatistics".into(),
                        params(&["Identity", "Mailbox"]),
                    ),
                    (
                        "Set-CASMailbox".into(),
                        params(&["Identity", "ActiveSyncBlockedDeviceIDs"]),
                    ),
                ],
            },
            ExoRole {
                name: RBAC_READ_ROLE.into(),
                entries: vec![
                    (
                        "Get-ManagementRoleAssignment".into(),
                        params(&["Identity", "Role", "RoleAssignee"]),
                    ),
                    ("Get-ManagementRoleEntry".into(), params(&["Identity"])),
                ],
            },
            ExoRole {
                name: VIEW_RECIPIENTS_ROLE.into(),
                entries: vec![("Get-Mailbox".into(), params(&["Identity", "ResultSize"]))],
            },
        ];
        for (app_id, name, kind) in [
            (DEFAULT_CLIENT_ID, "wipehook-runtime", "Application"),
            (
                DEFAULT_MANAGED_IDENTITY_CLIENT_ID,
                "wipehook",
                "ManagedIdentity",
            ),
        ] {
            let oid = principal_of(app_id);
            d.service_principals.push(ServicePrincipal {
                object_id: oid.clone(),
                app_id: app_id.into(),
                display_name: name.into(),
                sp_type: kind.into(),
                app_roles: vec![],
                assignment_required: false,
            });
            for (resource, role) in [
                (&exo_id, EXCHANGE_MANAGE_AS_APP.0),
                (&graph_id, USER_READ_ALL.0),
                (&graph_id, APPLICATION_READ_ALL.0),
                (&graph_id, SECURITY_INCIDENT_READWRITE_ALL.0),
                (&graph_id, USER_REVOKE_SESSIONS_ALL.0),
                (&graph_id, USER_ENABLE_DISABLE_ACCOUNT_ALL.0),
                (&graph_id, IDENTITY_RISKY_USER_READWRITE_ALL.0),
            ] {
                d.grant(&oid, resource, role);
            }
            d.role_assignments.push(RoleAssignment {
                name: id_for(&format!("ra:{oid}:responder")),
                scope: workspace.to_string(),
                role_definition: SENTINEL_RESPONDER.into(),
                principal_id: oid.clone(),
            });
            for role in [WIPE_ROLE, RBAC_READ_ROLE, VIEW_RECIPIENTS_ROLE] {
                d.exo_assignments.push(ExoAssignment {
                    role: role.into(),
                    role_group: ROLE_GROUP.into(),
                    principal_id: oid.clone(),
                    custom_recipient_write_scope: (role == WIPE_ROLE)
                        .then(|| "wipehook wipeable users".to_string()),
                });
            }
        }
        d
    }

    pub fn grant(&mut self, principal: &str, resource: &str, app_role: &str) {
        self.app_role_assignments.push(AppRoleAssignment {
            id: id_for(&format!("ara:{principal}:{resource}:{app_role}")),
            principal_id: principal.to_string(),
            resource_id: resource.to_string(),
            app_role_id: app_role.to_string(),
        });
    }

    pub fn sp(&self, object_id: &str) -> Option<&ServicePrincipal> {
        self.service_principals
            .iter()
            .find(|s| s.object_id.eq_ignore_ascii_case(object_id))
    }

    pub fn sp_by_app(&self, app_id: &str) -> Option<&ServicePrincipal> {
        self.service_principals
            .iter()
            .find(|s| s.app_id.eq_ignore_ascii_case(app_id))
    }

    /// The values of the app roles `principal` holds on the resource app
    /// `resource_app_id`: the `roles` claim of its tokens for that resource.
    pub fn roles_of(&self, principal: &str, resource_app_id: &str) -> Vec<String> {
        let Some(resource) = self.sp_by_app(resource_app_id) else {
            return vec![];
        };
        self.app_role_assignments
            .iter()
            .filter(|a| {
                a.principal_id.eq_ignore_ascii_case(principal)
                    && a.resource_id.eq_ignore_ascii_case(&resource.object_id)
            })
            .filter_map(|a| {
                resource
                    .app_roles
                    .iter()
                    .find(|r| r.id.eq_ignore_ascii_case(&a.app_role_id))
                    .map(|r| r.value.clone())
            })
            .collect()
    }

    /// Remove the assignments of app role `value` (on any resource) held by `principal`.
    pub fn revoke(&mut self, principal: &str, value: &str) {
        let ids: Vec<String> = self
            .service_principals
            .iter()
            .flat_map(|s| s.app_roles.iter())
            .filter(|r| r.value == value)
            .map(|r| r.id.to_ascii_lowercase())
            .collect();
        self.app_role_assignments.retain(|a| {
            !(a.principal_id.eq_ignore_ascii_case(principal)
                && ids.contains(&a.app_role_id.to_ascii_lowercase()))
        });
    }

    /// Which built-in Azure roles `principal` holds at or above `scope`.
    pub fn azure_roles_at(
        &self,
        principal: &str,
        scope: &str,
    ) -> Vec<&'static (&'static str, &'static str, bool, bool)> {
        let scope = scope.to_ascii_lowercase();
        self.role_assignments
            .iter()
            .filter(|a| a.principal_id.eq_ignore_ascii_case(principal))
            .filter(|a| {
                let s = a.scope.trim_end_matches('/').to_ascii_lowercase();
                s.is_empty() || scope == s || scope.starts_with(&format!("{s}/"))
            })
            .filter_map(|a| {
                AZURE_ROLES
                    .iter()
                    .find(|r| r.0.eq_ignore_ascii_case(&a.role_definition))
            })
            .collect()
    }

    /// The Exchange cmdlets `principal` may run.
    pub fn exo_cmdlets(&self, principal: &str) -> Vec<String> {
        self.exo_assignments
            .iter()
            .filter(|a| a.principal_id.eq_ignore_ascii_case(principal))
            .filter_map(|a| self.exo_roles.iter().find(|r| r.name == a.role))
            .flat_map(|r| r.entries.iter().map(|(c, _)| c.to_ascii_lowercase()))
            .collect()
    }
}

/// The full ARM id of a built-in role definition in the sim's subscription.
pub(crate) fn role_definition_id(guid: &str) -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
    )
}
