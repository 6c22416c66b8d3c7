//! Entra ID credentials (azure_identity), shared by Event Hubs and Blob Storage.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_core::credentials::TokenCredential;
use azure_identity::{
    AzureCliCredential, ClientSecretCredential, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
};

use crate::config::CredentialConfig;
use crate::eventhubs::auth::TokenProvider;
use crate::eventhubs::sas::SignedToken;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
#[error("cannot create the {kind} credential: {reason}")]
pub struct CredentialError {
    kind: &'static str,
    reason: String,
}

/// The azure_identity credential a config names.
pub fn token_credential(
    config: &CredentialConfig,
) -> Result<Arc<dyn TokenCredential>, CredentialError> {
    let fail = |kind: &'static str| {
        move |e: azure_core::Error| CredentialError {
            kind,
            reason: e.to_string(),
        }
    };
    Ok(match config {
        CredentialConfig::WorkloadIdentity => {
            WorkloadIdentityCredential::new(None).map_err(fail("workload_identity"))?
        }
        CredentialConfig::ManagedIdentity { client_id } => {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                ..Default::default()
            };
            ManagedIdentityCredential::new(Some(options)).map_err(fail("managed_identity"))?
        }
        CredentialConfig::AzureCli => AzureCliCredential::new(None).map_err(fail("azure_cli"))?,
        CredentialConfig::ClientSecret {
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
