//! Azure Blob Storage, as the blob checkpoint store and the `avro_blob` sink need it: one
//! container, a handful of operations, hubcap's own types. azure_storage_blob and azure_core
//! types stay inside this module.
//!
//! Every operation runs with bounded retries (3 tries, sub-second back-off), a 5 s connect
//! timeout and an overall deadline, so an unreachable account reports
//! [`StorageError::Unavailable`] within seconds instead of retrying silently for half a minute.
//! Conditional writes take a [`Condition`]; ETags are handled without their quotes.
//!
//! A retried conditional write can report a lost race it actually won (the first try landed,
//! its answer did not): callers that get [`StorageError::ConditionNotMet`] or
//! [`StorageError::AlreadyExists`] read the blob back and compare it with what they wrote
//! before they believe someone else wrote it.

mod endpoint;
mod error;
mod shared_key;

pub use endpoint::StorageAccount;
pub use error::StorageError;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_core::http::headers::Headers;
use azure_core::http::{
    ClientOptions, Etag, ExponentialRetryOptions, RequestContent, RetryOptions, Transport,
};
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobClientGetPropertiesOptions, BlobClientSetMetadataOptions,
    BlobClientUploadOptions, BlobContainerClientListBlobsOptions,
    BlockBlobClientCommitBlockListOptions, BlockLookupList, ListBlobsIncludeItem,
};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use bytes::Bytes;
use futures_util::TryStreamExt as _;

use crate::proxy::ProxyRoute;
use endpoint::{Auth, Endpoint};

/// Tries per request: the first and two retries.
const MAX_RETRIES: u32 = 2;
/// How long a TCP (and TLS) connect may take before the try fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the connection may sit silent while a response is awaited or read.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of one metadata-sized operation, retries included.
const OPERATION_DEADLINE: Duration = Duration::from_secs(30);
/// Deadline of an operation that moves a block's worth of data.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(10 * 60);

/// A precondition for a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Write whatever is there.
    None,
    /// Write only if the blob still has this ETag (quoted or not); else
    /// [`StorageError::ConditionNotMet`].
    IfMatch(String),
    /// Write only if no blob exists (`If-None-Match: *`); else [`StorageError::AlreadyExists`]
    /// or [`StorageError::ConditionNotMet`].
    IfNoneMatchAny,
}

/// One blob from a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobItem {
    /// Full blob name, `/` separators included.
    pub name: String,
    /// User metadata, keys lower-cased.
    pub metadata: HashMap<String, String>,
    /// ETag without quotes.
    pub etag: String,
    /// Last-Modified; the Unix epoch if the service left it out (reads as long ago).
    pub last_modified: SystemTime,
}

/// Properties of one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobProperties {
    /// User metadata, keys lower-cased.
    pub metadata: HashMap<String, String>,
    /// ETag without quotes.
    pub etag: String,
    /// Last-Modified; the Unix epoch if absent.
    pub last_modified: SystemTime,
    /// Size of the blob's content in bytes.
    pub content_length: u64,
}

/// What a successful write left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The blob's new ETag, without quotes.
    pub etag: String,
    /// The blob's new Last-Modified; the local clock if the response had none.
    pub last_modified: SystemTime,
}

/// One blob container, reached and authorized as a [`StorageAccount`] says. Cheap to clone.
#[derive(Clone)]
pub struct BlobContainer {
    /// The crate's client; its pipeline carries the auth, retry and transport settings.
    client: Arc<BlobContainerClient>,
    /// Container name, for messages.
    name: String,
    /// The container's URL with no query (where a SAS rides) and no user info: safe to show.
    url: String,
    /// Until when the service asked to be left alone (Retry-After), shared by every clone.
    throttle: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
}

impl std::fmt::Debug for BlobContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client's URL may carry a SAS: show the name only.
        f.debug_struct("BlobContainer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl BlobContainer {
    /// A client for `container` in the account `storage` names, through `proxy` unless
    /// `NO_PROXY` names the account's host. Does no I/O.
    pub fn connect(
        storage: &StorageAccount,
        container: &str,
        proxy: &ProxyRoute,
    ) -> Result<Self, StorageError> {
        let Endpoint {
            container_url,
            auth,
        } = Endpoint::resolve(storage, container)?;
        // reqwest would read HTTPS_PROXY itself; config already did, with NO_PROXY, so the
        // proxy is set here explicitly or not at all.
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            // Ranged downloads need the bytes as stored.
            .no_gzip()
            .no_deflate()
            .no_proxy();
        if let Some(proxy) = proxy.for_host(container_url.host_str().unwrap_or_default()) {
            let mut through =
                reqwest::Proxy::all(proxy.url()).map_err(|_| StorageError::Config {
                    reason: format!("proxy {} cannot be used", proxy.address()),
                })?;
            if let Some((user, password)) = &proxy.credentials {
                through = through.basic_auth(user, password.expose());
            }
            builder = builder.proxy(through);
        }
        let http_client = builder.build().map_err(|err| StorageError::Config {
            reason: format!("cannot build the HTTP client: {err}"),
        })?;
        let mut client_options = ClientOptions {
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                initial_delay: azure_core::time::Duration::milliseconds(200),
                max_retries: MAX_RETRIES,
                max_total_elapsed: azure_core::time::Duration::seconds(10),
                max_delay: azure_core::time::Duration::seconds(2),
            }),
            transport: Some(Transport::new(Arc::new(http_client))),
            ..ClientOptions::default()
        };
        let credential = match auth {
            Auth::SharedKey(policy) => {
                client_options.per_try_policies.push(Arc::new(policy));
                None
            }
            Auth::Sas => None,
            Auth::Token(credential) => Some(credential),
        };
        let options = BlobContainerClientOptions {
            client_options,
            ..BlobContainerClientOptions::default()
        };
        if credential.is_some() && container_url.scheme() != "https" {
            return Err(StorageError::Config {
                reason: "an Entra ID credential needs an https account_url".into(),
            });
        }
        let url = shown_url(&container_url);
        let client = BlobContainerClient::new(container_url, credential, Some(options))
            // The crate's message would print the URL, and with it a SAS.
            .map_err(|_| StorageError::Config {
                reason: format!("the URL of container {container:?} cannot take blob paths"),
            })?;
        Ok(Self {
            client: Arc::new(client),
            name: container.to_owned(),
            url,
            throttle: Arc::default(),
        })
    }

    /// Runs one operation, after any wait a throttled answer asked for: the SDK honours
    /// `Retry-After` between its own tries, this carries it over to the next operation, from
    /// whichever loop of hubcap's it comes (checkpoints, renewals, commits share the account).
    async fn call<T>(
        &self,
        operation: &'static str,
        target: &str,
        deadline: Duration,
        work: impl Future<Output = azure_core::Result<T>>,
    ) -> Result<T, StorageError> {
        let until = *self.throttle.lock().expect("throttle lock");
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
        let result = run(operation, target, deadline, work).await;
        if let Some(wait) = result.as_ref().err().and_then(StorageError::retry_after) {
            let until = tokio::time::Instant::now() + wait;
            let mut throttle = self.throttle.lock().expect("throttle lock");
            *throttle = Some(throttle.map_or(until, |t| t.max(until)));
        }
        result
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The container's URL without any secret (no SAS query, no user info), for reports.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn target(&self, blob: &str) -> String {
        format!("{}/{blob}", self.name)
    }

    /// Creates the container unless it exists.
    pub async fn create_container_if_missing(&self) -> Result<(), StorageError> {
        let created = self
            .call(
                "create container",
                &self.name,
                OPERATION_DEADLINE,
                self.client.create(None),
            )
            .await;
        match created {
            Ok(_) | Err(StorageError::AlreadyExists { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Every blob whose name starts with `prefix`, with its metadata, in name order.
    pub async fn list_with_metadata(&self, prefix: &str) -> Result<Vec<BlobItem>, StorageError> {
        let options = BlobContainerClientListBlobsOptions {
            include: Some(vec![ListBlobsIncludeItem::Metadata]),
            // An empty value would go out as a bare `prefix`, which Azurite leaves out of the
            // Shared Key string to sign.
            prefix: Some(prefix.to_owned()).filter(|prefix| !prefix.is_empty()),
            ..Default::default()
        };
        let target = format!("{}/{prefix}*", self.name);
        let listing = async {
            let mut pages = self.client.list_blobs(Some(options))?.into_pages();
            let mut items = Vec::new();
            while let Some(page) = pages.try_next().await? {
                for blob in page.into_model()?.blob_items {
                    let Some(name) = blob.name else { continue };
                    let properties = blob.properties.unwrap_or_default();
                    items.push(BlobItem {
                        name,
                        metadata: lower_keys(
                            blob.metadata
                                .and_then(|metadata| metadata.values)
                                .unwrap_or_default(),
                        ),
                        etag: properties.etag.map(unquoted).unwrap_or_default(),
                        last_modified: properties
                            .last_modified
                            .map_or(SystemTime::UNIX_EPOCH, SystemTime::from),
                    });
                }
            }
            Ok(items)
        };
        self.call("list blobs", &target, OPERATION_DEADLINE, listing)
            .await
    }

    /// The blob's properties and metadata; `None` if it does not exist.
    pub async fn get_properties(&self, name: &str) -> Result<Option<BlobProperties>, StorageError> {
        let blob = self.client.blob_client(name);
        let response = self
            .call(
                "get properties of",
                &self.target(name),
                OPERATION_DEADLINE,
                blob.get_properties(Some(BlobClientGetPropertiesOptions::default())),
            )
            .await;
        let headers = match response {
            Ok(response) => response.headers().clone(),
            Err(StorageError::NotFound { .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        let written = written_from(&headers);
        Ok(Some(BlobProperties {
            metadata: metadata_from(&headers),
            etag: written.etag,
            last_modified: written.last_modified,
            content_length: header(&headers, "content-length")
                .and_then(|length| length.parse().ok())
                .unwrap_or(0),
        }))
    }

    /// Replaces the blob's metadata (Set Blob Metadata), which must exist:
    /// [`StorageError::NotFound`] if it does not.
    pub async fn set_metadata(
        &self,
        name: &str,
        metadata: &HashMap<String, String>,
        condition: Condition,
    ) -> Result<Written, StorageError> {
        let mut options = BlobClientSetMetadataOptions::default();
        match condition {
            Condition::None => {}
            Condition::IfMatch(etag) => options.if_match = Some(quoted(&etag)),
            Condition::IfNoneMatchAny => options.if_none_match = Some(Etag::from("*")),
        }
        let blob = self.client.blob_client(name);
        let response = self
            .call(
                "set metadata of",
                &self.target(name),
                OPERATION_DEADLINE,
                blob.set_metadata(metadata, Some(options)),
            )
            .await?;
        Ok(written_from(response.headers()))
    }

    /// Writes an empty block blob with `metadata` (Put Blob).
    pub async fn upload_empty(
        &self,
        name: &str,
        metadata: &HashMap<String, String>,
        condition: Condition,
    ) -> Result<Written, StorageError> {
        self.upload(name, Bytes::new(), metadata, condition).await
    }

    /// Writes `content` as a block blob with `metadata`: one Put Blob up to the crate's
    /// partition size, staged blocks and a block list above it.
    pub async fn upload(
        &self,
        name: &str,
        content: Bytes,
        metadata: &HashMap<String, String>,
        condition: Condition,
    ) -> Result<Written, StorageError> {
        let mut options = BlobClientUploadOptions {
            metadata: Some(metadata.clone()),
            ..Default::default()
        };
        match condition {
            Condition::None => {}
            Condition::IfMatch(etag) => options.if_match = Some(quoted(&etag)),
            Condition::IfNoneMatchAny => options.if_none_match = Some(Etag::from("*")),
        }
        let deadline = if content.is_empty() {
            OPERATION_DEADLINE
        } else {
            TRANSFER_DEADLINE
        };
        let blob = self.client.blob_client(name);
        let uploaded = self
            .call(
                "upload",
                &self.target(name),
                deadline,
                blob.upload(content.into(), Some(options)),
            )
            .await?;
        Ok(Written {
            etag: uploaded.etag.map(unquoted).unwrap_or_default(),
            last_modified: uploaded
                .last_modified
                .map_or_else(SystemTime::now, SystemTime::from),
        })
    }

    /// Uploads one uncommitted block of the blob. Block ids are opaque bytes (at most 64), all
    /// of one length within a blob.
    pub async fn stage_block(
        &self,
        name: &str,
        block_id: &[u8],
        content: Bytes,
    ) -> Result<(), StorageError> {
        let block_blob = self.client.blob_client(name).block_blob_client();
        let length = content.len() as u64;
        self.call(
            "stage block of",
            &self.target(name),
            TRANSFER_DEADLINE,
            block_blob.stage_block(
                block_id,
                length,
                // Zero-copy: the block's bytes go to the transport as they are.
                content.into(),
                None,
            ),
        )
        .await?;
        Ok(())
    }

    /// Makes the staged blocks, in this order, the blob's content, with `metadata`. With
    /// [`Condition::IfNoneMatchAny`] a committed blob is never replaced.
    pub async fn commit_block_list(
        &self,
        name: &str,
        block_ids: &[Vec<u8>],
        metadata: &HashMap<String, String>,
        condition: Condition,
    ) -> Result<Written, StorageError> {
        let mut options = BlockBlobClientCommitBlockListOptions {
            metadata: Some(metadata.clone()),
            ..Default::default()
        };
        match condition {
            Condition::None => {}
            Condition::IfMatch(etag) => options.if_match = Some(quoted(&etag)),
            Condition::IfNoneMatchAny => options.if_none_match = Some(Etag::from("*")),
        }
        let blocks = BlockLookupList {
            latest: Some(block_ids.to_vec()),
            ..Default::default()
        };
        let block_blob = self.client.blob_client(name).block_blob_client();
        let committed = async {
            let blocks = RequestContent::try_from(blocks)?;
            block_blob.commit_block_list(blocks, Some(options)).await
        };
        let response = self
            .call(
                "commit block list of",
                &self.target(name),
                TRANSFER_DEADLINE,
                committed,
            )
            .await?;
        Ok(written_from(response.headers()))
    }

    /// The blob's content as it arrives, chunk by chunk: memory stays bounded whatever the
    /// blob's size (the crate fetches 4 MiB ranges, at most two ahead with one transfer at a
    /// time). Each chunk has the transfer deadline.
    pub async fn download_stream(&self, name: &str) -> Result<BlobDownload, StorageError> {
        let blob = self.client.blob_client(name);
        let options = BlobClientDownloadOptions {
            parallel: Some(std::num::NonZero::<usize>::MIN),
            ..Default::default()
        };
        let target = self.target(name);
        let result = self
            .call(
                "download",
                &target,
                TRANSFER_DEADLINE,
                blob.download(Some(options)),
            )
            .await?;
        Ok(BlobDownload {
            body: result.body,
            target,
        })
    }

    /// The blob's content.
    pub async fn download(&self, name: &str) -> Result<Vec<u8>, StorageError> {
        let blob = self.client.blob_client(name);
        let downloaded = async {
            let result = blob.download(None).await?;
            result.body.collect().await
        };
        let bytes = self
            .call(
                "download",
                &self.target(name),
                TRANSFER_DEADLINE,
                downloaded,
            )
            .await?;
        Ok(bytes.to_vec())
    }
}

/// A blob's content being downloaded ([`BlobContainer::download_stream`]).
pub struct BlobDownload {
    body: azure_core::http::AsyncResponseBody,
    /// Container and blob, for messages.
    target: String,
}

impl std::fmt::Debug for BlobDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobDownload")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl BlobDownload {
    /// The next bytes of the blob; `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StorageError> {
        use futures_util::StreamExt as _;
        let next = async { self.body.next().await.transpose() };
        run("download", &self.target, TRANSFER_DEADLINE, next).await
    }
}

/// `url` as it may be shown: no query (a SAS), no fragment, no user or password.
fn shown_url(url: &azure_core::http::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    // Only fails for URLs that cannot have user info, which then have none.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// Runs one operation under `deadline`, sorting its failure.
async fn run<T>(
    operation: &'static str,
    target: &str,
    deadline: Duration,
    work: impl Future<Output = azure_core::Result<T>>,
) -> Result<T, StorageError> {
    match tokio::time::timeout(deadline, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(StorageError::from_azure(operation, target, &err)),
        Err(_) => Err(StorageError::timed_out(operation, target, deadline)),
    }
}

fn header<'a>(headers: &'a Headers, name: &'static str) -> Option<&'a str> {
    headers.get_optional_str(&azure_core::http::headers::HeaderName::from_static(name))
}

/// ETag and Last-Modified of a write's response.
fn written_from(headers: &Headers) -> Written {
    Written {
        etag: header(headers, "etag").map(unquoted).unwrap_or_default(),
        last_modified: header(headers, "last-modified")
            .and_then(|text| azure_core::time::parse_rfc7231(text).ok())
            .map_or_else(SystemTime::now, SystemTime::from),
    }
}

/// The `x-ms-meta-*` headers as metadata.
fn metadata_from(headers: &Headers) -> HashMap<String, String> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let key = name.as_str().strip_prefix("x-ms-meta-")?;
            Some((key.to_owned(), value.as_str().to_owned()))
        })
        .collect()
}

fn lower_keys(metadata: HashMap<String, String>) -> HashMap<String, String> {
    metadata
        .into_iter()
        .map(|(key, value)| (key.to_ascii_lowercase(), value))
        .collect()
}

fn unquoted(etag: impl AsRef<str>) -> String {
    etag.as_ref().trim_matches('"').to_owned()
}

fn quoted(etag: &str) -> Etag {
    Etag::from(format!("\"{}\"", etag.trim_matches('"')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_lose_their_quotes_on_the_way_in_and_get_them_back_on_the_way_out() {
        assert_eq!(unquoted("\"0x8DC1\""), "0x8DC1");
        assert_eq!(unquoted("0x8DC1"), "0x8DC1");
        assert_eq!(quoted("0x8DC1").as_ref(), "\"0x8DC1\"");
        assert_eq!(quoted("\"0x8DC1\"").as_ref(), "\"0x8DC1\"");
    }

    #[test]
    fn a_container_shows_its_name_but_never_its_sas() {
        let storage = StorageAccount::ContainerUrl(crate::secret::Secret::new(
            "http://127.0.0.1:10000/devstoreaccount1/checkpoints?sv=2022-11-02&sig=S3CRET",
        ));
        let container =
            BlobContainer::connect(&storage, "checkpoints", &Default::default()).unwrap();
        let shown = format!("{container:?}");
        assert!(
            shown.contains("checkpoints") && !shown.contains("S3CRET"),
            "{shown}"
        );
        assert_eq!(
            container.url(),
            "http://127.0.0.1:10000/devstoreaccount1/checkpoints"
        );
    }
}
