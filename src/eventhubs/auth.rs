//! Claims-based security: putting tokens on a connection's `$cbs` node and keeping them fresh.
//!
//! hubcap puts one token per connection, for the event hub as a whole
//! (`sb://<host>/<hub>`): the service accepts a token for a parent path on every link below it,
//! so all partition receivers and the management link share it. A task renews it before it
//! expires (five minutes before, or halfway through lifetimes shorter than ten minutes).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageId, Properties,
};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Timestamp, Value};
use fe2o3_amqp::{Receiver, Sender, Session};

use super::error::{reason, EventHubsError};
use super::sas::{self, SignedToken};
use crate::secret::Secret;

/// Token type for SAS tokens on `$cbs`.
pub const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";
/// Token type for Entra ID (OAuth) tokens on `$cbs`.
pub const JWT_TOKEN_TYPE: &str = "jwt";
/// Scope Entra ID tokens for Event Hubs are requested for.
pub const EVENT_HUBS_SCOPE: &str = "https://eventhubs.azure.net/.default";
/// How long a put-token may take before the connection is considered broken.
const PUT_TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Something that hands out bearer tokens (Entra ID credentials, or a test's fake).
pub trait TokenProvider: Send + Sync {
    /// A token for `scope` and when it expires.
    fn token(
        &self,
        scope: &str,
    ) -> Pin<Box<dyn Future<Output = Result<SignedToken, String>> + Send + '_>>;
}

/// How hubcap authenticates to Event Hubs.
#[derive(Clone)]
pub enum Credential {
    /// A SAS key: hubcap signs its own tokens and renews them.
    SharedAccessKey {
        key_name: String,
        key: Secret,
        /// Validity of each token hubcap signs.
        token_lifetime: Duration,
    },
    /// A pre-signed SAS token: it cannot be renewed and stops working when it expires.
    SharedAccessSignature(Secret),
    /// Entra ID: `jwt` tokens for `EVENT_HUBS_SCOPE`.
    Provider(Arc<dyn TokenProvider>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::SharedAccessKey {
                key_name,
                token_lifetime,
                ..
            } => f
                .debug_struct("SharedAccessKey")
                .field("key_name", key_name)
                .field("token_lifetime", token_lifetime)
                .finish_non_exhaustive(),
            Credential::SharedAccessSignature(_) => {
                f.write_str("SharedAccessSignature(<redacted>)")
            }
            Credential::Provider(_) => f.write_str("Provider(..)"),
        }
    }
}

impl Credential {
    /// A token valid for `audience`, and its type for put-token.
    pub async fn token_for(
        &self,
        audience: &str,
    ) -> Result<(SignedToken, &'static str), EventHubsError> {
        match self {
            Credential::SharedAccessKey {
                key_name,
                key,
                token_lifetime,
            } => Ok((
                sas::sign(audience, key_name, key, SystemTime::now(), *token_lifetime),
                SAS_TOKEN_TYPE,
            )),
            Credential::SharedAccessSignature(token) => {
                let expires_at = sas::expiry_of(token).ok_or_else(|| EventHubsError::Settings {
                    reason: "the SharedAccessSignature has no se= expiry".into(),
                })?;
                if expires_at <= SystemTime::now() {
                    return Err(EventHubsError::Unauthorized {
                        audience: audience.to_owned(),
                        description: "the pre-signed SharedAccessSignature has expired".into(),
                    });
                }
                Ok((
                    SignedToken {
                        token: token.clone(),
                        expires_at,
                    },
                    SAS_TOKEN_TYPE,
                ))
            }
            Credential::Provider(provider) => {
                let token = provider
                    .token(EVENT_HUBS_SCOPE)
                    .await
                    .map_err(|description| EventHubsError::Unauthorized {
                        audience: audience.to_owned(),
                        description: format!("the credential gave no token: {description}"),
                    })?;
                Ok((token, JWT_TOKEN_TYPE))
            }
        }
    }

    /// Whether tokens can be renewed (a pre-signed token cannot).
    pub fn renewable(&self) -> bool {
        !matches!(self, Credential::SharedAccessSignature(_))
    }
}

/// When to renew a token that was put at `issued_at` and expires at `expires_at`.
pub fn renewal_time(issued_at: SystemTime, expires_at: SystemTime) -> SystemTime {
    let lifetime = expires_at
        .duration_since(issued_at)
        .unwrap_or(Duration::ZERO);
    let margin = (lifetime / 2).min(Duration::from_secs(300));
    expires_at - margin
}

/// The `$cbs` request/response link pair of one connection.
#[derive(Debug)]
pub struct CbsLink {
    session: SessionHandle<()>,
    sender: Sender,
    receiver: Receiver,
    next_message_id: u64,
}

const CBS_NODE: &str = "$cbs";
const CBS_REPLY_TO: &str = "hubcap-cbs-client";

impl CbsLink {
    pub async fn attach(
        connection: &mut fe2o3_amqp::connection::ConnectionHandle<()>,
    ) -> Result<Self, EventHubsError> {
        let lost = |e: String| EventHubsError::ConnectionLost { reason: e };
        let mut session = Session::begin(connection)
            .await
            .map_err(|e| lost(reason(e)))?;
        let sender = Sender::attach(&mut session, "hubcap-cbs-sender", CBS_NODE)
            .await
            .map_err(|e| lost(reason(e)))?;
        let receiver = Receiver::builder()
            .name("hubcap-cbs-receiver")
            .source(CBS_NODE)
            .target(CBS_REPLY_TO)
            .attach(&mut session)
            .await
            .map_err(|e| lost(reason(e)))?;
        Ok(Self {
            session,
            sender,
            receiver,
            next_message_id: 0,
        })
    }

    /// Puts `token` for `audience`; fails with `Unauthorized` if the service refuses it.
    pub async fn put_token(
        &mut self,
        audience: &str,
        token: &SignedToken,
        token_type: &str,
    ) -> Result<(), EventHubsError> {
        let message_id = self.next_message_id;
        self.next_message_id += 1;
        let expiration = token
            .expires_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut props = OrderedMap::new();
        props.insert(
            "operation".to_owned(),
            SimpleValue::String("put-token".into()),
        );
        props.insert("type".to_owned(), SimpleValue::String(token_type.into()));
        props.insert("name".to_owned(), SimpleValue::String(audience.into()));
        props.insert(
            "expiration".to_owned(),
            SimpleValue::Timestamp(Timestamp::from_milliseconds(expiration)),
        );
        let request = Message {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: Some(Properties {
                message_id: Some(MessageId::Ulong(message_id)),
                reply_to: Some(CBS_REPLY_TO.into()),
                ..Default::default()
            }),
            application_properties: Some(ApplicationProperties(props)),
            body: Body::Value(AmqpValue(Value::String(token.token.expose().to_owned()))),
            footer: None,
        };
        let exchange = async {
            let lost = |e: String| EventHubsError::ConnectionLost { reason: e };
            self.sender
                .send(request)
                .await
                .map_err(|e| lost(reason(e)))?;
            loop {
                let delivery = self
                    .receiver
                    .recv::<Body<Value>>()
                    .await
                    .map_err(|e| lost(reason(e)))?;
                let _ = self.receiver.accept(&delivery).await;
                let response = delivery.into_message();
                let correlates = response
                    .properties
                    .as_ref()
                    .and_then(|p| p.correlation_id.as_ref())
                    .is_none_or(|id| *id == MessageId::Ulong(message_id));
                if correlates {
                    return Ok(response);
                }
            }
        };
        let response = tokio::time::timeout(PUT_TOKEN_TIMEOUT, exchange)
            .await
            .map_err(|_| EventHubsError::Timeout {
                operation: "put-token",
                seconds: PUT_TOKEN_TIMEOUT.as_secs(),
            })??;
        let (status, description) = status_of(&response);
        match status {
            Some(200..=299) => Ok(()),
            Some(_) => Err(EventHubsError::Unauthorized {
                audience: audience.to_owned(),
                description,
            }),
            None => Err(EventHubsError::Protocol {
                reason: "put-token response has no status-code".into(),
            }),
        }
    }

    pub async fn close(mut self) {
        let _ = self.sender.close().await;
        let _ = self.receiver.close().await;
        let _ = self.session.end().await;
    }
}

/// `status-code` and `status-description` of a `$cbs` or `$management` response (either
/// spelling the service uses).
pub(super) fn status_of(response: &Message<Body<Value>>) -> (Option<i32>, String) {
    let props = response.application_properties.as_ref();
    let get = |a: &str, b: &str| props.and_then(|p| p.0.get(a).or_else(|| p.0.get(b)));
    let status = match get("status-code", "statusCode") {
        Some(SimpleValue::Int(n)) => Some(*n),
        Some(SimpleValue::Long(n)) => i32::try_from(*n).ok(),
        Some(SimpleValue::Uint(n)) => i32::try_from(*n).ok(),
        Some(SimpleValue::Short(n)) => Some(i32::from(*n)),
        _ => None,
    };
    let description = match get("status-description", "statusDescription") {
        Some(SimpleValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    (status, description)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_five_minutes_early_or_halfway_for_short_tokens() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            renewal_time(t0, t0 + Duration::from_secs(3600)),
            t0 + Duration::from_secs(3300)
        );
        assert_eq!(
            renewal_time(t0, t0 + Duration::from_secs(6)),
            t0 + Duration::from_secs(3)
        );
        assert_eq!(renewal_time(t0, t0), t0);
    }

    #[test]
    fn debug_never_shows_keys_or_tokens() {
        let key = Credential::SharedAccessKey {
            key_name: "listen".into(),
            key: Secret::new("KEYMATERIAL"),
            token_lifetime: Duration::from_secs(60),
        };
        let sas = Credential::SharedAccessSignature(Secret::new(
            "SharedAccessSignature sig=TOKENMATERIAL",
        ));
        assert!(!format!("{key:?}{sas:?}").contains("MATERIAL"));
    }
}
