//! From a storage configuration to the container's URL and how to authorize against it.
//!
//! - A connection string with `AccountKey`: the blob endpoint + container, signed with
//!   [`SharedKeyPolicy`]. `UseDevelopmentStorage=true` is Azurite's well-known account on
//!   `http://127.0.0.1:10000/devstoreaccount1`.
//! - A connection string with `SharedAccessSignature`, or a container SAS URL: the SAS rides in
//!   the URL's query and there is no credential.
//! - An account URL with an Entra ID credential: bearer tokens (https only, the crate insists).
//!
//! Errors never repeat a connection string, a key or a SAS URL.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::Url;

use super::shared_key::SharedKeyPolicy;
use super::StorageError;
use crate::credential::{token_credential, CredentialSpec};
use crate::secret::Secret;

/// How to reach a storage account: used by the blob checkpoint store and the `avro_blob` sink.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageAccount {
    /// An Azure Storage connection string with an account key or a SAS.
    ConnectionString(Secret),
    /// An `https` URL of the container with a SAS query; it names the container.
    ContainerUrl(Secret),
    /// The account's blob endpoint and an Entra ID credential.
    AccountUrl {
        /// `https://<account>.blob.core.windows.net`, without a query.
        account_url: String,
        /// Where the Entra ID tokens come from.
        credential: CredentialSpec,
    },
}

impl StorageAccount {
    /// Everything [`super::BlobContainer::connect`] would refuse about this account and
    /// `container`, without building a credential or a client: config validation runs it so
    /// that `check-config` refuses what the daemon would refuse at start.
    pub fn check(&self, container: &str) -> Result<(), StorageError> {
        match self {
            StorageAccount::AccountUrl { account_url, .. } => {
                let url = container_url(account_url, container)?;
                if url.scheme() != "https" {
                    return Err(config_error(
                        "an Entra ID credential needs an https account_url",
                    ));
                }
                Ok(())
            }
            _ => Endpoint::resolve(self, container).map(drop),
        }
    }
}

/// Azurite's well-known development account (public: it is in Azurite's README).
const DEVELOPMENT_ACCOUNT: &str = "devstoreaccount1";
const DEVELOPMENT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const DEVELOPMENT_BLOB_ENDPOINT: &str = "http://127.0.0.1:10000/devstoreaccount1";

/// How requests to the container are authorized.
pub(super) enum Auth {
    /// Shared Key signing with the account key.
    SharedKey(SharedKeyPolicy),
    /// A SAS in the container URL's query; nothing else to add.
    Sas,
    /// Entra ID bearer tokens.
    Token(Arc<dyn TokenCredential>),
}

/// Where the container is and how to get in.
pub(super) struct Endpoint {
    /// The container's URL (with the SAS query under [`Auth::Sas`]).
    pub(super) container_url: Url,
    /// How each request is authorized.
    pub(super) auth: Auth,
}

fn config_error(reason: impl Into<String>) -> StorageError {
    StorageError::Config {
        reason: reason.into(),
    }
}

impl Endpoint {
    /// Resolves `storage` for `container`. For a container URL the URL names the container and
    /// `container` must agree with it.
    pub(super) fn resolve(storage: &StorageAccount, container: &str) -> Result<Self, StorageError> {
        match storage {
            StorageAccount::ConnectionString(secret) => {
                let parts = ConnectionString::parse(secret.expose())?;
                let mut container_url = container_url(&parts.blob_endpoint()?, container)?;
                let auth = match (&parts.account_key, &parts.shared_access_signature) {
                    (Some(key), _) => {
                        let account = parts.account_name.as_deref().ok_or_else(|| {
                            config_error(
                                "storage connection string has AccountKey but no AccountName",
                            )
                        })?;
                        Auth::SharedKey(SharedKeyPolicy::new(account, key).map_err(|reason| {
                            config_error(format!("storage connection string: {reason}"))
                        })?)
                    }
                    (None, Some(sas)) => {
                        container_url.set_query(Some(sas.trim_start_matches('?')));
                        Auth::Sas
                    }
                    (None, None) => {
                        return Err(config_error(
                            "storage connection string has neither AccountKey nor \
                             SharedAccessSignature",
                        ))
                    }
                };
                Ok(Self {
                    container_url,
                    auth,
                })
            }
            StorageAccount::ContainerUrl(secret) => {
                let container_url = Url::parse(secret.expose())
                    .map_err(|err| config_error(format!("container_url is not a URL: {err}")))?;
                let named = container_url
                    .path_segments()
                    .and_then(|mut segments| segments.rfind(|segment| !segment.is_empty()))
                    .unwrap_or_default();
                if named != container {
                    return Err(config_error(format!(
                        "container_url names container {named:?}, expected {container:?}"
                    )));
                }
                Ok(Self {
                    container_url,
                    auth: Auth::Sas,
                })
            }
            StorageAccount::AccountUrl {
                account_url,
                credential,
            } => {
                let credential =
                    token_credential(credential).map_err(|err| config_error(err.to_string()))?;
                Ok(Self {
                    container_url: container_url(account_url, container)?,
                    auth: Auth::Token(credential),
                })
            }
        }
    }
}

/// `endpoint` (an account's blob endpoint, maybe with a path such as Azurite's
/// `/devstoreaccount1`) joined with the container name.
fn container_url(endpoint: &str, container: &str) -> Result<Url, StorageError> {
    let mut url = Url::parse(endpoint)
        .map_err(|err| config_error(format!("blob endpoint is not a URL: {err}")))?;
    if url.query().is_some() {
        return Err(config_error("blob endpoint must not carry a query"));
    }
    url.path_segments_mut()
        .map_err(|()| config_error("blob endpoint cannot take a path"))?
        .pop_if_empty()
        .push(container);
    Ok(url)
}

/// The parts of an Azure Storage connection string hubcap uses; keys are case-insensitive.
#[derive(Default)]
struct ConnectionString {
    /// `DefaultEndpointsProtocol`, `https` unless set.
    protocol: Option<String>,
    /// `AccountName`.
    account_name: Option<String>,
    /// `AccountKey`, base64.
    account_key: Option<String>,
    /// `SharedAccessSignature`, a SAS query.
    shared_access_signature: Option<String>,
    /// `BlobEndpoint`, when the account's endpoint is not the default one.
    blob_endpoint: Option<String>,
    /// `EndpointSuffix`, `core.windows.net` unless set.
    endpoint_suffix: Option<String>,
}

impl ConnectionString {
    fn parse(text: &str) -> Result<Self, StorageError> {
        let mut parts = Self::default();
        let mut development = false;
        for (index, part) in text
            .split(';')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .enumerate()
        {
            let Some((name, value)) = part.split_once('=') else {
                return Err(config_error(format!(
                    "storage connection string part {} (counting from 1) is not Key=Value",
                    index + 1
                )));
            };
            let value = Some(value.trim().to_owned()).filter(|value| !value.is_empty());
            match name.trim().to_ascii_lowercase().as_str() {
                "usedevelopmentstorage" => {
                    development = value.is_some_and(|value| value.eq_ignore_ascii_case("true"))
                }
                "defaultendpointsprotocol" => parts.protocol = value,
                "accountname" => parts.account_name = value,
                "accountkey" => parts.account_key = value,
                "sharedaccesssignature" => parts.shared_access_signature = value,
                "blobendpoint" => parts.blob_endpoint = value,
                "endpointsuffix" => parts.endpoint_suffix = value,
                // Other services' endpoints and Azurite's proxy setting do not concern blobs.
                _ => {}
            }
        }
        if development {
            parts.account_name = Some(DEVELOPMENT_ACCOUNT.into());
            parts.account_key = Some(DEVELOPMENT_KEY.into());
            parts.shared_access_signature = None;
            parts
                .blob_endpoint
                .get_or_insert_with(|| DEVELOPMENT_BLOB_ENDPOINT.into());
        }
        Ok(parts)
    }

    fn blob_endpoint(&self) -> Result<String, StorageError> {
        if let Some(endpoint) = &self.blob_endpoint {
            return Ok(endpoint.clone());
        }
        let account = self.account_name.as_deref().ok_or_else(|| {
            config_error("storage connection string has neither AccountName nor BlobEndpoint")
        })?;
        let protocol = self.protocol.as_deref().unwrap_or("https");
        let suffix = self
            .endpoint_suffix
            .as_deref()
            .unwrap_or("core.windows.net");
        Ok(format!("{protocol}://{account}.blob.{suffix}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(storage: StorageAccount) -> Result<Endpoint, StorageError> {
        Endpoint::resolve(&storage, "checkpoints")
    }

    #[test]
    fn an_account_key_signs_requests_to_the_default_or_given_endpoint() {
        for (text, expected) in [
            (
                "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
                "https://acct.blob.core.windows.net/checkpoints",
            ),
            (
                "accountname=acct;accountkey=a2V5;endpointsuffix=core.chinacloudapi.cn",
                "https://acct.blob.core.chinacloudapi.cn/checkpoints",
            ),
            (
                "AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1/;",
                "http://127.0.0.1:9/devstoreaccount1/checkpoints",
            ),
            (
                "UseDevelopmentStorage=true",
                "http://127.0.0.1:10000/devstoreaccount1/checkpoints",
            ),
        ] {
            let endpoint = resolve(StorageAccount::ConnectionString(Secret::new(text))).unwrap();
            assert_eq!(endpoint.container_url.as_str(), expected, "{text}");
            assert!(matches!(endpoint.auth, Auth::SharedKey(_)), "{text}");
        }
    }

    #[test]
    fn a_sas_goes_into_the_url_and_no_credential_is_used() {
        let text = "BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=?sv=2022-11-02&sig=abc%3D";
        let endpoint = resolve(StorageAccount::ConnectionString(Secret::new(text))).unwrap();
        assert_eq!(
            endpoint.container_url.as_str(),
            "https://acct.blob.core.windows.net/checkpoints?sv=2022-11-02&sig=abc%3D"
        );
        assert!(matches!(endpoint.auth, Auth::Sas));

        let url = "http://127.0.0.1:10000/devstoreaccount1/checkpoints?sv=2022-11-02&sig=abc";
        let endpoint = resolve(StorageAccount::ContainerUrl(Secret::new(url))).unwrap();
        assert_eq!(endpoint.container_url.as_str(), url);
        assert!(matches!(endpoint.auth, Auth::Sas));
    }

    #[test]
    fn check_refuses_what_connect_refuses_without_building_a_credential() {
        let account = |url: &str| StorageAccount::AccountUrl {
            account_url: url.into(),
            credential: CredentialSpec::WorkloadIdentity,
        };
        // Workload identity would need AZURE_* variables to be built; check never builds it.
        assert!(account("https://acct.blob.core.windows.net")
            .check("capture")
            .is_ok());
        let plain = account("http://127.0.0.1:10000/devstoreaccount1").check("capture");
        assert!(plain
            .unwrap_err()
            .to_string()
            .contains("needs an https account_url"));
        let key_without_name = StorageAccount::ConnectionString(Secret::new(
            "BlobEndpoint=http://127.0.0.1:9/a;AccountKey=a2V5",
        ));
        let refused = key_without_name.check("capture").unwrap_err().to_string();
        assert!(
            refused.contains("AccountKey but no AccountName"),
            "{refused}"
        );
    }

    #[test]
    fn problems_are_named_without_the_secret() {
        for (storage, expected) in [
            (
                StorageAccount::ConnectionString(Secret::new("AccountKey=S3CRET+KEY=")),
                "neither AccountName nor BlobEndpoint",
            ),
            (
                StorageAccount::ConnectionString(Secret::new("AccountName=a;AccountKey=S3CRET!")),
                "not valid base64",
            ),
            (
                StorageAccount::ConnectionString(Secret::new(
                    "BlobEndpoint=http://127.0.0.1:9/a;AccountKey=S3CRET+KEY=",
                )),
                "AccountKey but no AccountName",
            ),
            (
                StorageAccount::ConnectionString(Secret::new("AccountName=a;S3CRET")),
                "part 2",
            ),
            (
                StorageAccount::ContainerUrl(Secret::new(
                    "https://acct.blob.core.windows.net/other?sig=S3CRET",
                )),
                "names container \"other\"",
            ),
        ] {
            let message = resolve(storage).err().unwrap().to_string();
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("S3CRET"), "{message}");
        }
    }
}
