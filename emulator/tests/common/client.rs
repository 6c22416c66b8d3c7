//! A client connection: `$cbs` and `$management` request links, receivers and senders.

use std::net::SocketAddr;

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::CreditMode;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{ReceiverSettleMode, SenderSettleMode};
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageId, Outcome, Properties, Source,
};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Symbol, Timestamp, Value};
use fe2o3_amqp::{Connection, Delivery, Receiver, Sender, Session};
use hubcap_emulator::Emulator;
use serde_amqp::described::Described;
use serde_amqp::descriptor::Descriptor;
use tokio::io::{AsyncRead, AsyncWrite};

use super::*;

/// A `$cbs` or `$management` answer.
#[derive(Debug)]
pub struct Response {
    pub status_code: i32,
    pub description: String,
    pub correlation_id: Option<MessageId>,
    pub body: Value,
}

/// A request/response link pair on a node, as every SDK attaches it.
struct RequestLink {
    sender: Sender,
    receiver: Receiver,
    /// The receiver's target, sent as `reply-to`.
    reply_to: String,
    next_message_id: u64,
}

impl RequestLink {
    async fn attach(session: &mut SessionHandle<()>, node: &str) -> Self {
        let reply_to = format!("{}-client", node.trim_start_matches('$'));
        let sender = within(
            "attach a request sender",
            STEP,
            Sender::attach(session, format!("{node}-sender"), node),
        )
        .await
        .expect("request sender attaches");
        let receiver = within(
            "attach a response receiver",
            STEP,
            Receiver::builder()
                .name(format!("{node}-receiver"))
                .source(node)
                .target(reply_to.as_str())
                .auto_accept(true)
                .attach(session),
        )
        .await
        .expect("response receiver attaches");
        Self {
            sender,
            receiver,
            reply_to,
            next_message_id: 0,
        }
    }

    async fn request(
        &mut self,
        message_id: Option<MessageId>,
        application_properties: OrderedMap<String, SimpleValue>,
        body: Value,
    ) -> Response {
        let message_id = message_id.unwrap_or_else(|| {
            self.next_message_id += 1;
            MessageId::Ulong(self.next_message_id)
        });
        let message = Message {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: Some(Properties {
                message_id: Some(message_id),
                reply_to: Some(self.reply_to.clone()),
                ..Properties::default()
            }),
            application_properties: Some(ApplicationProperties(application_properties)),
            body: Body::Value(AmqpValue(body)),
            footer: None,
        };
        let outcome = within("send a request", STEP, self.sender.send(message))
            .await
            .expect("request is sent");
        assert!(
            matches!(outcome, Outcome::Accepted(_)),
            "request not accepted: {outcome:?}"
        );
        let delivery: Delivery<Body<Value>> =
            within("receive a response", STEP, self.receiver.recv())
                .await
                .expect("a response arrives");
        let message = delivery.into_message();
        let properties = message
            .application_properties
            .expect("a response has application properties")
            .0;
        let status_code = match properties.get("status-code") {
            Some(SimpleValue::Int(code)) => *code,
            other => panic!("status-code must be an int, got {other:?}"),
        };
        let description = match properties.get("status-description") {
            Some(SimpleValue::String(text)) => text.clone(),
            _ => String::new(),
        };
        let body = match message.body {
            Body::Value(AmqpValue(value)) => value,
            Body::Empty => Value::Null,
            other => panic!("a response body must be an amqp-value, got {other:?}"),
        };
        Response {
            status_code,
            description,
            correlation_id: message.properties.and_then(|p| p.correlation_id),
            body,
        }
    }
}

/// Where and how a receiver attaches. Defaults: hub1, `$Default`, no filter (start of stream),
/// no epoch, auto credit 300.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    pub hub: String,
    pub consumer_group: String,
    pub partition: String,
    /// Overrides the address built from the three fields above.
    pub address: Option<String>,
    pub filter: Option<Value>,
    pub epoch: Option<i64>,
    pub credit: CreditMode,
}

impl ReceiverOptions {
    pub fn partition(partition: &str) -> Self {
        Self {
            hub: HUB.into(),
            consumer_group: DEFAULT_CONSUMER_GROUP.into(),
            partition: partition.into(),
            address: None,
            filter: None,
            epoch: None,
            credit: CreditMode::Auto(300),
        }
    }

    pub fn hub(mut self, hub: &str) -> Self {
        self.hub = hub.into();
        self
    }

    pub fn consumer_group(mut self, consumer_group: &str) -> Self {
        self.consumer_group = consumer_group.into();
        self
    }

    pub fn address(mut self, address: &str) -> Self {
        self.address = Some(address.into());
        self
    }

    /// A selector filter with the ulong descriptor, as the Rust SDK sends it.
    pub fn selector(self, expression: &str) -> Self {
        self.described_filter(Descriptor::Code(SELECTOR_FILTER_CODE), expression)
    }

    /// A selector filter with the symbol descriptor, as the Python SDK sends it.
    pub fn named_selector(self, expression: &str) -> Self {
        self.described_filter(Descriptor::Name(Symbol::from(SELECTOR_FILTER)), expression)
    }

    fn described_filter(mut self, descriptor: Descriptor, expression: &str) -> Self {
        self.filter = Some(Value::Described(Box::new(Described {
            descriptor,
            value: Value::String(expression.into()),
        })));
        self
    }

    /// Any value under the selector filter key, for malformed filters.
    pub fn raw_filter(mut self, value: Value) -> Self {
        self.filter = Some(value);
        self
    }

    pub fn epoch(mut self, epoch: i64) -> Self {
        self.epoch = Some(epoch);
        self
    }

    pub fn credit(mut self, credit: CreditMode) -> Self {
        self.credit = credit;
        self
    }

    pub fn link_address(&self) -> String {
        self.address
            .clone()
            .unwrap_or_else(|| consumer_address(&self.hub, &self.consumer_group, &self.partition))
    }
}

/// One client connection with one session, attaching `$cbs`/`$management` links on first use.
pub struct Client {
    pub connection: ConnectionHandle<()>,
    pub session: SessionHandle<()>,
    addr: SocketAddr,
    cbs: Option<RequestLink>,
    management: Option<RequestLink>,
    links_attached: u32,
}

impl Client {
    /// Connects over plain AMQP with SASL ANONYMOUS, as the SDKs do in emulator mode.
    pub async fn connect(emulator: &Emulator) -> Self {
        Self::try_connect(emulator)
            .await
            .expect("the client connects")
    }

    pub async fn try_connect(emulator: &Emulator) -> Result<Self, String> {
        let addr = emulator.amqp_addr();
        let connection = within(
            "open a connection",
            STEP,
            Connection::builder()
                .container_id(format!("test-client-{}", now_ms()))
                .hostname("127.0.0.1")
                .sasl_profile(SaslProfile::Anonymous)
                .open(format!("amqp://{addr}").as_str()),
        )
        .await
        .map_err(|e| e.to_string())?;
        Self::with_connection(addr, connection).await
    }

    /// Opens the AMQP connection over a stream the test supplies (a wrapped socket).
    pub async fn connect_over<Io>(emulator: &Emulator, stream: Io) -> Self
    where
        Io: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
    {
        let connection = within(
            "open a connection over a stream",
            STEP,
            Connection::builder()
                .container_id(format!("test-client-{}", now_ms()))
                .scheme("amqp")
                .hostname("127.0.0.1")
                .sasl_profile(SaslProfile::Anonymous)
                .open_with_stream(stream),
        )
        .await
        .expect("the client connects over the stream");
        Self::with_connection(emulator.amqp_addr(), connection)
            .await
            .expect("the session begins")
    }

    /// Connects with TLS first (no AMQP TLS header), as the SDKs do for `amqps://`.
    pub async fn connect_tls(
        emulator: &Emulator,
        connector: tokio_rustls::TlsConnector,
    ) -> Result<Self, String> {
        let url = format!("amqps://localhost:{}", emulator.amqp_addr().port());
        let connection = within(
            "open a TLS connection",
            STEP,
            Connection::builder()
                .container_id(format!("test-client-{}", now_ms()))
                .sasl_profile(SaslProfile::Anonymous)
                .alt_tls_establishment(true)
                .tls_connector(connector)
                .open(url.as_str()),
        )
        .await
        .map_err(|e| e.to_string())?;
        Self::with_connection(emulator.amqp_addr(), connection).await
    }

    /// Connects, then puts a token for `hub` (asserting 202).
    pub async fn authorized(emulator: &Emulator, hub: &str) -> Self {
        let mut client = Self::connect(emulator).await;
        client.put_sas_token(emulator, hub).await;
        client
    }

    /// Begins the client's session on an already open connection.
    pub async fn with_connection(
        addr: SocketAddr,
        mut connection: ConnectionHandle<()>,
    ) -> Result<Self, String> {
        let session = within("begin a session", STEP, Session::begin(&mut connection))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            connection,
            session,
            addr,
            cbs: None,
            management: None,
            links_attached: 0,
        })
    }

    fn next_link_name(&mut self, role: &str) -> String {
        self.links_attached += 1;
        format!("{role}-{}", self.links_attached)
    }

    /// Sends a put-token request and returns the answer, whatever its status.
    pub async fn put_token(
        &mut self,
        token_type: &str,
        audience: &str,
        token: &str,
        expiration_unix: u64,
    ) -> Response {
        if self.cbs.is_none() {
            self.cbs = Some(RequestLink::attach(&mut self.session, "$cbs").await);
        }
        let mut properties = OrderedMap::new();
        properties.insert("operation".into(), SimpleValue::String("put-token".into()));
        properties.insert("type".into(), SimpleValue::String(token_type.into()));
        properties.insert("name".into(), SimpleValue::String(audience.into()));
        properties.insert(
            "expiration".into(),
            SimpleValue::Timestamp(Timestamp::from_milliseconds(expiration_unix as i64 * 1000)),
        );
        let cbs = self.cbs.as_mut().unwrap();
        cbs.request(None, properties, Value::String(token.into()))
            .await
    }

    /// Puts a one-hour SAS token for `hub` and asserts it was accepted.
    pub async fn put_sas_token(&mut self, emulator: &Emulator, hub: &str) {
        let response = self
            .put_token(
                SAS_TOKEN_TYPE,
                &audience(emulator, hub),
                &sas_token(emulator, hub),
                unix_now() + 3600,
            )
            .await;
        assert_eq!(
            response.status_code, 202,
            "put-token refused: {}",
            response.description
        );
    }

    /// Sends a `$management` request with these application properties.
    pub async fn management_request(
        &mut self,
        message_id: Option<MessageId>,
        properties: &[(&str, &str)],
    ) -> Response {
        if self.management.is_none() {
            self.management = Some(RequestLink::attach(&mut self.session, "$management").await);
        }
        let properties = properties
            .iter()
            .map(|(k, v)| (k.to_string(), SimpleValue::String(v.to_string())))
            .collect();
        let management = self.management.as_mut().unwrap();
        management
            .request(message_id, properties, Value::Null)
            .await
    }

    /// READ of hub or partition properties with a security token for the hub.
    pub async fn management_read(
        &mut self,
        emulator: &Emulator,
        kind: &str,
        hub: &str,
        partition: Option<&str>,
    ) -> Response {
        let token = sas_token(emulator, hub);
        let mut properties = vec![
            ("operation", "READ"),
            ("type", kind),
            ("name", hub),
            ("security_token", token.as_str()),
        ];
        if let Some(partition) = partition {
            properties.push(("partition", partition));
        }
        self.management_request(None, &properties).await
    }

    pub async fn hub_properties(&mut self, emulator: &Emulator, hub: &str) -> HubProperties {
        let response = self
            .management_read(emulator, "com.microsoft:eventhub", hub, None)
            .await;
        assert_eq!(response.status_code, 200, "{}", response.description);
        HubProperties::from_body(&response.body)
    }

    pub async fn partition_properties(
        &mut self,
        emulator: &Emulator,
        hub: &str,
        partition: &str,
    ) -> PartitionProperties {
        let response = self
            .management_read(emulator, "com.microsoft:partition", hub, Some(partition))
            .await;
        assert_eq!(response.status_code, 200, "{}", response.description);
        PartitionProperties::from_body(&response.body)
    }

    /// Attaches a receiver; a refused link still attaches and is then closed with an error,
    /// which [`refusal`] reads.
    pub async fn receiver(&mut self, options: &ReceiverOptions) -> Receiver {
        let name = self.next_link_name("receiver");
        let mut source = Source::builder().address(options.link_address());
        if let Some(filter) = &options.filter {
            let mut filters = OrderedMap::new();
            filters.insert(Symbol::from(SELECTOR_FILTER), filter.clone());
            source = source.filter(filters);
        }
        let mut properties = OrderedMap::new();
        if let Some(epoch) = options.epoch {
            properties.insert(Symbol::from(EPOCH_PROPERTY), Value::Long(epoch));
        }
        within(
            "attach a receiver",
            STEP,
            Receiver::builder()
                .name(name.as_str())
                .source(source.build())
                .target(format!("{name}-target"))
                .sender_settle_mode(SenderSettleMode::Settled)
                .receiver_settle_mode(ReceiverSettleMode::First)
                .properties(properties)
                .credit_mode(options.credit.clone())
                .auto_accept(true)
                .attach(&mut self.session),
        )
        .await
        .expect("the receiver attach is answered")
    }

    /// Attaches a sender to `address` ("hub1", "hub1/Partitions/2").
    pub async fn sender(&mut self, address: &str) -> Sender {
        let name = self.next_link_name("sender");
        within(
            "attach a sender",
            STEP,
            Sender::attach(&mut self.session, name, address),
        )
        .await
        .expect("the sender attach is answered")
    }

    /// Ends the session and closes the connection, ignoring errors from a peer already gone.
    pub async fn close(mut self) {
        drop(self.cbs.take());
        drop(self.management.take());
        let _ = tokio::time::timeout(STEP, self.session.end()).await;
        let _ = tokio::time::timeout(STEP, self.connection.close()).await;
    }
}
