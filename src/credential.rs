//! Entra ID credentials (azure_identity), shared by Event Hubs and Blob Storage.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_core::credentials::TokenCredential;
use azure_identity::{
    AzureCliCredential, ClientSecretCredential, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
};

use crate::eventhubs::{SignedToken, TokenProvider};
use crate::secret::Secret;

/// An Entra ID credential (azure_identity), as `credential = { type = "..." }` names it.
#[derive(Debug, Clone, PartialEq)]
pub enum CredentialSpec {
    /// Kubernetes workload identity: the federated token file and the `AZURE_*` variables.
    WorkloadIdentity,
    /// The VM's or pod's managed identity.
    ManagedIdentity {
        /// Picks a user-assigned identity; the system-assigned one when `None`.
        client_id: Option<String>,
    },
    /// The signed-in Azure CLI user, for development.
    AzureCli,
    /// An app registration's client secret.
    ClientSecret {
        /// Directory (tenant) of the app registration.
        tenant_id: String,
        /// Application (client) id of the app registration.
        client_id: String,
        /// From `client_secret` or `client_secret_file`.
        client_secret: Secret,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("cannot create the {kind} credential: {reason}")]
pub struct CredentialError {
    kind: &'static str,
    reason: String,
}

/// A tenant id as azure_identity accepts it: letters, digits, `.` and `-`. azure_identity
/// refuses any other when the credential is built; config validation asks here first, so that
/// `check-config` refuses it too.
pub fn check_tenant_id(tenant_id: &str) -> Result<(), String> {
    let valid = !tenant_id.is_empty()
        && tenant_id
            .chars()
            .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid tenant id {tenant_id:?}: use the directory's id (a GUID) or its domain name, \
             letters, digits, '.' and '-'"
        ))
    }
}

/// The azure_identity credential `spec` names. Workload and managed identity read the process
/// environment here, so their problems show only at start.
pub fn token_credential(
    spec: &CredentialSpec,
) -> Result<Arc<dyn TokenCredential>, CredentialError> {
    let fail = |kind: &'static str| {
        move |e: azure_core::Error| CredentialError {
            kind,
            reason: e.to_string(),
        }
    };
    Ok(match spec {
        CredentialSpec::WorkloadIdentity => {
            WorkloadIdentityCredential::new(None).map_err(fail("workload_identity"))?
        }
        CredentialSpec::ManagedIdentity { client_id } => {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                ..Default::default()
            };
            ManagedIdentityCredential::new(Some(options)).map_err(fail("managed_identity"))?
        }
        CredentialSpec::AzureCli => AzureCliCredential::new(None).map_err(fail("azure_cli"))?,
        CredentialSpec::ClientSecret {
            tenant_id,
            client_id,
            client_secret,
        } => ClientSecretCredential::new(
            tenant_id,
            client_id.clone(),
            azure_core::credentials::Secret::new(client_secret.expose().to_owned()),
            None,
        )
        .map_err(fail("client_secret"))?,
    })
}

/// Hands azure_identity tokens to the Event Hubs `$cbs` node.
#[derive(Debug)]
pub struct EntraTokenProvider(pub Arc<dyn TokenCredential>);

impl TokenProvider for EntraTokenProvider {
    fn token(
        &self,
        scope: &str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<SignedToken, String>> + Send + '_>>
    {
        let scope = scope.to_owned();
        Box::pin(async move {
            let token = self
                .0
                .get_token(&[scope.as_str()], None)
                .await
                .map_err(|e| e.to_string())?;
            let expires_at = SystemTime::UNIX_EPOCH
                + Duration::from_secs(
                    u64::try_from(token.expires_on.unix_timestamp()).unwrap_or(0),
                );
            Ok(SignedToken {
                token: Secret::new(token.token.secret().to_owned()),
                expires_at,
            })
        })
    }
}
