//! Verification of the tokens clients hand to the `$cbs` node with `put-token`.
//!
//! SAS tokens are checked against the configured shared access keys. Entra ID JWTs are accepted on
//! their claims alone: the emulator is a test peer with no access to Entra ID signing keys, so it
//! checks expiry and audience but never the JWT signature.
//!
//! Every resource is compared in the form produced by [`normalize_resource`], which drops the
//! scheme and host: clients name the emulator by different hosts (localhost, 127.0.0.1, the
//! configured namespace), .NET and Go link addresses carry no host at all, and the emulator serves
//! exactly one namespace.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;
use sha2::Sha256;

const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";
const JWT_TOKEN_TYPE: &str = "jwt";
const SAS_PREFIX: &str = "SharedAccessSignature";
const EVENT_HUBS_JWT_AUDIENCE: &str = "https://eventhubs.azure.net";

/// The bytes Python's `quote_plus` leaves as they are; generated tokens must match its output so
/// that tests exercise the same `sr` spelling the Python SDK sends.
const QUOTE_PLUS_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a put-token request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {reason}")]
    Malformed { reason: &'static str },
    #[error("unknown shared access key name '{key_name}'")]
    UnknownKeyName { key_name: String },
    #[error("token signature does not match the key named '{key_name}'")]
    BadSignature { key_name: String },
    #[error("token expired at {expired_at_unix} (now {now_unix})")]
    Expired { expired_at_unix: u64, now_unix: u64 },
    #[error("token grants '{granted}' but the request is for '{audience}'")]
    AudienceMismatch { granted: String, audience: String },
    #[error("unsupported token type '{token_type}'")]
    UnsupportedType { token_type: String },
}

/// The token flavours a put-token `type` property can announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Sas,
    Jwt,
}

impl TokenKind {
    /// Maps the put-token `type` application property; `None` for types the emulator cannot check.
    pub fn from_type(token_type: &str) -> Option<TokenKind> {
        match token_type.to_ascii_lowercase().as_str() {
            SAS_TOKEN_TYPE => Some(TokenKind::Sas),
            JWT_TOKEN_TYPE => Some(TokenKind::Jwt),
            _ => None,
        }
    }
}

/// A shared access policy the emulator accepts SAS tokens for.
#[derive(Clone)]
pub struct SasKey {
    /// Policy name clients send as `skn`, e.g. `RootManageSharedAccessKey`.
    pub key_name: String,
    /// Signing key; used as UTF-8 bytes exactly as written in the connection string.
    key: String,
}

impl SasKey {
    pub fn new(key_name: impl Into<String>, key: impl Into<String>) -> SasKey {
        SasKey {
            key_name: key_name.into(),
            key: key.into(),
        }
    }

    /// The key itself, for building connection strings; never log it.
    pub fn expose_key(&self) -> &str {
        &self.key
    }
}

impl fmt::Debug for SasKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasKey")
            .field("key_name", &self.key_name)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// What an accepted token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// When the grant lapses, in seconds since the Unix epoch.
    pub expires_at_unix: u64,
    /// Normalized resource the token grants; empty means the whole namespace.
    pub resource: String,
}

/// Dispatches on the put-token `type` property to [`verify_sas`] or [`verify_jwt`].
pub fn verify_token(
    token_type: &str,
    token: &str,
    keys: &[SasKey],
    audience: &str,
    now_unix: u64,
) -> Result<VerifiedToken, TokenError> {
    match TokenKind::from_type(token_type) {
        Some(TokenKind::Sas) => verify_sas(token, keys, audience, now_unix),
        Some(TokenKind::Jwt) => verify_jwt(token, audience, now_unix),
        None => Err(TokenError::UnsupportedType {
            token_type: token_type.to_string(),
        }),
    }
}

/// Checks a `SharedAccessSignature sr=..&sig=..&se=..&skn=..` token for `audience`.
pub fn verify_sas(
    token: &str,
    keys: &[SasKey],
    audience: &str,
    now_unix: u64,
) -> Result<VerifiedToken, TokenError> {
    let body = token
        .trim()
        .strip_prefix(SAS_PREFIX)
        .filter(|rest| rest.starts_with(char::is_whitespace))
        .ok_or_else(|| malformed("missing 'SharedAccessSignature ' prefix"))?
        .trim_start();
    // Every field is `name=value` (found by fuzzing: a stray `&` split `skn=%25` into a field
    // `skn=%`, which lenient decoding read as the same name, and a field `5`).
    if body.split('&').any(|pair| !pair.contains('=')) {
        return Err(malformed("a field is not name=value"));
    }
    let encoded_resource = sas_field(body, "sr", "sr is missing, empty or repeated")?;
    let sig = sas_field(body, "sig", "sig is missing, empty or repeated")?;
    let expiry_text = sas_field(body, "se", "se is missing, empty or repeated")?;
    let key_name = sas_field(body, "skn", "skn is missing, empty or repeated")?;
    // Form decoding, as the signers encode it (`quote_plus`: a space is `+`); found by fuzzing,
    // a key name with a space never matched.
    let key_name = strict_percent_decode(&key_name.replace('+', " "), "skn")?;
    let key_name = String::from_utf8_lossy(&key_name).into_owned();
    if !expiry_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("se is not a decimal number of seconds"));
    }
    let expires_at_unix: u64 = expiry_text
        .parse()
        .map_err(|_| malformed("se is out of range"))?;
    // An unencoded `+` in sig stays a base64 `+`: percent-decoding, unlike form-decoding,
    // leaves it alone.
    let signature = strict_percent_decode(sig, "sig")?;
    let signature = STANDARD
        .decode(signature)
        .map_err(|_| malformed("sig is not base64"))?;

    let mut named_keys = keys.iter().filter(|k| k.key_name == key_name).peekable();
    if named_keys.peek().is_none() {
        return Err(TokenError::UnknownKeyName { key_name });
    }
    // Python upper-cases the hex escapes and Rust lower-cases the whole resource, and each signs
    // what it sends, so the literal `sr` is signed; a re-encoding would match only one client.
    let string_to_sign = format!("{encoded_resource}\n{expiry_text}");
    let signature_matches = named_keys.any(|key| {
        let mut mac = new_mac(&key.key);
        mac.update(string_to_sign.as_bytes());
        mac.verify_slice(&signature).is_ok()
    });
    if !signature_matches {
        return Err(TokenError::BadSignature { key_name });
    }
    if expires_at_unix <= now_unix {
        return Err(expired(expires_at_unix, now_unix));
    }
    let granted = normalize_resource(encoded_resource);
    let requested = normalize_resource(audience);
    if !resource_covers(&granted, &requested) {
        let audience = requested;
        return Err(TokenError::AudienceMismatch { granted, audience });
    }
    let resource = granted;
    Ok(VerifiedToken {
        expires_at_unix,
        resource,
    })
}

/// Accepts an Entra ID JWT that is unexpired and, if it names an audience, names Event Hubs.
///
/// The signature is deliberately not verified (see the module docs), so any well-formed JWT
/// grants the whole namespace.
pub fn verify_jwt(token: &str, audience: &str, now_unix: u64) -> Result<VerifiedToken, TokenError> {
    let mut parts = token.trim().split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("jwt must have three dot-separated parts"));
    };
    // Some encoders pad base64url even though RFC 7515 says not to.
    let payload = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| malformed("jwt payload is not base64url"))?;
    let claims: Value =
        serde_json::from_slice(&payload).map_err(|_| malformed("jwt payload is not json"))?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or_else(|| malformed("jwt has no numeric exp claim"))?;
    // Saturating float-to-int cast: negative or NaN `exp` becomes 0 and is rejected as expired.
    let expires_at_unix = exp as u64;
    if expires_at_unix <= now_unix {
        return Err(expired(expires_at_unix, now_unix));
    }
    let audiences: Option<Vec<&str>> = match claims.get("aud") {
        None => None,
        Some(Value::String(aud)) => Some(vec![aud.as_str()]),
        Some(Value::Array(values)) => Some(values.iter().filter_map(Value::as_str).collect()),
        Some(_) => Some(Vec::new()),
    };
    if let Some(audiences) = audiences {
        // Python asks for `https://eventhubs.azure.net//.default`, Rust without the double slash.
        let names_event_hubs = audiences.iter().any(|aud| {
            aud.get(..EVENT_HUBS_JWT_AUDIENCE.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(EVENT_HUBS_JWT_AUDIENCE))
        });
        if !names_event_hubs {
            return Err(TokenError::AudienceMismatch {
                granted: audiences.join(", "),
                audience: audience.to_string(),
            });
        }
    }
    Ok(VerifiedToken {
        expires_at_unix,
        resource: String::new(),
    })
}

/// Base64 (standard, padded) HMAC-SHA256 of `"<encoded_resource>\n<expiry_unix>"`.
pub fn sign_sas(encoded_resource: &str, expiry_unix: u64, key: &str) -> String {
    let mut mac = new_mac(key);
    mac.update(format!("{encoded_resource}\n{expiry_unix}").as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Builds a SAS token the way the Python SDK does (`quote_plus` encoding, fields sr, sig, se, skn).
pub fn generate_sas_token(resource: &str, key_name: &str, key: &str, expiry_unix: u64) -> String {
    let encoded_resource = quote_plus(resource);
    let signature = sign_sas(&encoded_resource, expiry_unix, key);
    format!(
        "{SAS_PREFIX} sr={encoded_resource}&sig={}&se={expiry_unix}&skn={}",
        quote_plus(&signature),
        quote_plus(key_name)
    )
}

/// Reduces a resource URI or link address to its lower-case path below the namespace:
/// `sb://ns.servicebus.windows.net/Hub1/ConsumerGroups/$Default` becomes
/// `hub1/consumergroups/$default`.
pub fn normalize_resource(s: &str) -> String {
    let decoded = percent_decode_str(s).decode_utf8_lossy().to_lowercase();
    strip_scheme_and_authority(&decoded)
        .trim_matches('/')
        .to_string()
}

/// Whether a token for `granted` may be used for `requested`; both must already be normalized.
/// The match is by whole path segments so that `hub1` does not cover `hub10`.
pub fn resource_covers(granted: &str, requested: &str) -> bool {
    granted.is_empty()
        || requested
            .strip_prefix(granted)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn strip_scheme_and_authority(s: &str) -> &str {
    match s.find("://") {
        Some(scheme_end) if !s[..scheme_end].contains('/') => {
            let authority_and_path = &s[scheme_end + 3..];
            authority_and_path
                .find('/')
                .map_or("", |path_start| &authority_and_path[path_start..])
        }
        _ => s,
    }
}

fn quote_plus(s: &str) -> String {
    // A literal `%20` cannot appear in the output otherwise, because `%` itself is escaped.
    utf8_percent_encode(s, QUOTE_PLUS_UNRESERVED)
        .to_string()
        .replace("%20", "+")
}

fn new_mac(key: &str) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac accepts keys of any length")
}

fn malformed(reason: &'static str) -> TokenError {
    TokenError::Malformed { reason }
}

fn expired(expired_at_unix: u64, now_unix: u64) -> TokenError {
    TokenError::Expired {
        expired_at_unix,
        now_unix,
    }
}

/// The single non-empty value of `name=` among the `&`-separated pairs of a SAS token body.
/// Percent-decodes a token field, refusing a `%` not followed by two hex digits (lenient
/// decoding keeps it as a literal `%`, so `%` and `%25` would name the same thing).
fn strict_percent_decode(value: &str, field: &'static str) -> Result<Vec<u8>, TokenError> {
    let bytes = value.as_bytes();
    let escapes_ok = bytes.iter().enumerate().all(|(at, &byte)| {
        byte != b'%'
            || bytes
                .get(at + 1..at + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes_ok {
        return Err(malformed(match field {
            "skn" => "skn has a '%' that is not a %XX escape",
            _ => "sig has a '%' that is not a %XX escape",
        }));
    }
    Ok(percent_decode_str(value).collect())
}

fn sas_field<'a>(body: &'a str, name: &str, reason: &'static str) -> Result<&'a str, TokenError> {
    let mut values = body
        .split('&')
        .filter_map(|pair| pair.strip_prefix(name)?.strip_prefix('='));
    match (values.next(), values.next()) {
        (Some(value), None) if !value.is_empty() => Ok(value),
        _ => Err(malformed(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;
    const KEY_NAME: &str = "RootManageSharedAccessKey";
    const KEY: &str = "secret-key";

    fn keys() -> Vec<SasKey> {
        let listen_key = SasKey::new("ListenOnly", "other-key");
        vec![listen_key, SasKey::new(KEY_NAME, KEY)]
    }

    fn python_token(resource: &str, expiry_unix: u64) -> String {
        generate_sas_token(resource, KEY_NAME, KEY, expiry_unix)
    }

    /// The Rust SDK's spelling: everything but `A-Za-z0-9-_.~` escaped, then all lower-cased.
    fn rust_token(resource: &str, expiry_unix: u64) -> String {
        let sr = utf8_percent_encode(resource, QUOTE_PLUS_UNRESERVED).to_string();
        let sr = sr.to_lowercase();
        let sig = quote_plus(&sign_sas(&sr, expiry_unix, KEY));
        format!("SharedAccessSignature sr={sr}&sig={sig}&se={expiry_unix}&skn={KEY_NAME}")
    }

    fn jwt(claims: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        format!("{header}.{}.c2lnbmF0dXJl", URL_SAFE_NO_PAD.encode(claims))
    }

    fn refusal(token: &str, audience: &str) -> TokenError {
        let err = verify_sas(token, &keys(), audience, NOW).unwrap_err();
        let rendered = format!("{err} {err:?}");
        assert!(!rendered.contains(KEY), "{rendered} reveals the key");
        err
    }

    #[test]
    fn python_sdk_known_answer_matches() {
        // Expected values printed by azure/eventhub/_pyamqp/utils.py generate_sas_token in python3.
        let resource = "sb://127.0.0.1:5672/hub1";
        let expected_sig = "gut4jSsoEXO2S08KOjpiTRRHFsNUq/ybaInfL1tvXoI=";
        assert_eq!(sign_sas(&quote_plus(resource), NOW, KEY), expected_sig);
        let expected_token = "SharedAccessSignature sr=sb%3A%2F%2F127.0.0.1%3A5672%2Fhub1\
            &sig=gut4jSsoEXO2S08KOjpiTRRHFsNUq%2FybaInfL1tvXoI%3D&se=1700000000\
            &skn=RootManageSharedAccessKey";
        assert_eq!(python_token(resource, NOW), expected_token);
    }

    #[test]
    fn python_style_token_verifies_for_its_consumer_group() {
        let token = python_token("sb://localhost/hub1/consumergroups/$Default", NOW + 3600);
        let audience = "sb://127.0.0.1/hub1/consumergroups/$default";
        let verified = verify_sas(&token, &keys(), audience, NOW).unwrap();
        assert_eq!(verified.expires_at_unix, NOW + 3600);
        assert_eq!(verified.resource, "hub1/consumergroups/$default");
    }

    #[test]
    fn rust_style_lower_cased_token_verifies_for_a_partition_link() {
        let token = rust_token("amqps://MyNs.example.com/hub1", NOW + 60);
        assert!(token.contains("sr=amqps%3a%2f%2fmyns.example.com%2fhub1&"));
        let link = "amqps://127.0.0.1:5672/hub1/ConsumerGroups/$Default/Partitions/0";
        let verified = verify_sas(&token, &keys(), link, NOW).unwrap();
        assert_eq!(verified.resource, "hub1");
    }

    #[test]
    fn fields_may_come_in_any_order() {
        let token = python_token("sb://h/hub1", NOW + 60);
        let body = token.strip_prefix("SharedAccessSignature ").unwrap();
        let reversed: Vec<&str> = body.split('&').rev().collect();
        let token = format!("SharedAccessSignature {}", reversed.join("&"));
        assert!(verify_sas(&token, &keys(), "hub1", NOW).is_ok());
    }

    #[test]
    fn token_signed_with_another_key_is_a_bad_signature() {
        let token = generate_sas_token("sb://h/hub1", KEY_NAME, "wrong", NOW + 60);
        let key_name = KEY_NAME.to_string();
        assert_eq!(
            refusal(&token, "hub1"),
            TokenError::BadSignature { key_name }
        );
    }

    #[test]
    fn token_with_an_edited_resource_is_a_bad_signature() {
        let token = python_token("sb://h/hub1", NOW + 60).replace("hub1", "hub2");
        let err = refusal(&token, "hub2");
        assert!(matches!(err, TokenError::BadSignature { .. }), "{err:?}");
    }

    #[test]
    fn token_for_an_unknown_key_name_is_refused() {
        let token = generate_sas_token("sb://h/hub1", "Send", KEY, NOW + 60);
        let key_name = "Send".to_string();
        assert_eq!(
            refusal(&token, "hub1"),
            TokenError::UnknownKeyName { key_name }
        );
    }

    #[test]
    fn token_expiring_now_is_expired() {
        let token = python_token("sb://h/hub1", NOW);
        assert_eq!(refusal(&token, "hub1"), expired(NOW, NOW));
    }

    #[test]
    fn token_for_one_hub_is_refused_for_another() {
        let token = python_token("sb://h/hub1", NOW + 60);
        let (granted, audience) = ("hub1".to_string(), "hub2/partitions/0".to_string());
        let mismatch = TokenError::AudienceMismatch { granted, audience };
        assert_eq!(refusal(&token, "sb://h/hub2/Partitions/0"), mismatch);
        let err = refusal(&token, "/hub10");
        assert!(
            matches!(err, TokenError::AudienceMismatch { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn namespace_token_covers_every_hub() {
        let token = python_token("sb://myns.servicebus.windows.net/", NOW + 60);
        let verified = verify_sas(&token, &keys(), "amqps://h/hub7/$management", NOW);
        assert_eq!(verified.unwrap().resource, "");
    }

    #[test]
    fn resource_prefixes_cover_whole_segments_only() {
        let covered = "hub1/consumergroups/cg/partitions/0";
        assert!(resource_covers("", covered));
        assert!(resource_covers("hub1", covered));
        assert!(resource_covers("hub1/consumergroups/cg", covered));
        assert!(resource_covers(covered, covered));
        assert!(!resource_covers("hub1", "hub10"));
        assert!(!resource_covers("hub1/partitions/0", "hub1"));
        assert!(!resource_covers("hub1", ""));
    }

    #[test]
    fn normalize_resource_drops_scheme_host_case_and_slashes() {
        for (input, expected) in [
            (
                "sb://ns.example.net/hub1/ConsumerGroups/$Default",
                "hub1/consumergroups/$default",
            ),
            ("amqps://127.0.0.1:5672/hub1", "hub1"),
            ("/hub1/Partitions/0", "hub1/partitions/0"),
            ("hub1", "hub1"),
            ("sb://host/", ""),
            ("sb://host", ""),
            ("", ""),
            ("sb%3A%2F%2Fhost%2FHub1%2F", "hub1"),
            ("amqps%3a%2f%2fhost%2fhub1", "hub1"),
            (
                "hub1/ConsumerGroups/%24Default",
                "hub1/consumergroups/$default",
            ),
        ] {
            assert_eq!(normalize_resource(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn malformed_sas_tokens_are_errors_not_panics() {
        let good = python_token("sb://h/hub1", NOW + 60);
        for input in [
            String::new(),
            "SharedAccessSignature".into(),
            "SharedAccessSignature ".into(),
            "SharedAccessSignaturesr=a&sig=b&se=1&skn=c".into(),
            "SharedAccessSignature &&&==".into(),
            "SharedAccessSignature sr=é&sig=ü&se=1&skn=ß".into(),
            good.replace("SharedAccessSignature ", ""),
            good.replace("sr=", "x="),
            good.replace("&sig=", "&x="),
            good.replace("&se=", "&x="),
            good.replace("&skn=", "&x="),
            good.replace("se=1700000060", "se="),
            good.replace("se=1700000060", "se=soon"),
            good.replace("se=1700000060", "se=-5"),
            good.replace("se=1700000060", "se=99999999999999999999999"),
            good.replace("&sig=", "&sig=%%%"),
            good.replace("&sig=", "&sig=%FF"),
            format!("{good}&se=1"),
        ] {
            let err = refusal(&input, "hub1");
            assert!(
                matches!(err, TokenError::Malformed { .. }),
                "{input:?}: {err:?}"
            );
        }
    }

    #[test]
    fn jwt_for_event_hubs_grants_the_namespace() {
        let exp = NOW + 60;
        for claims in [
            format!(r#"{{"aud":"https://eventhubs.azure.net//.default","exp":{exp}}}"#),
            format!(r#"{{"aud":["api://x","https://EventHubs.azure.net/"],"exp":{exp}}}"#),
            format!(r#"{{"exp":{exp}.5}}"#),
        ] {
            let verified = verify_jwt(&jwt(&claims), "amqps://h/hub1", NOW).unwrap();
            assert_eq!(
                (verified.expires_at_unix, verified.resource.as_str()),
                (exp, "")
            );
        }
    }

    #[test]
    fn jwt_for_another_audience_or_in_the_past_is_refused() {
        for aud in [r#""https://storage.azure.com""#, "[]", "42"] {
            let token = jwt(&format!(r#"{{"aud":{aud},"exp":{}}}"#, NOW + 60));
            let err = verify_jwt(&token, "hub1", NOW).unwrap_err();
            assert!(
                matches!(err, TokenError::AudienceMismatch { .. }),
                "{aud}: {err:?}"
            );
        }
        let token = jwt(&format!(r#"{{"exp":{NOW}}}"#));
        assert_eq!(verify_jwt(&token, "hub1", NOW), Err(expired(NOW, NOW)));
        let token = jwt(r#"{"exp":-1}"#);
        assert_eq!(verify_jwt(&token, "hub1", NOW), Err(expired(0, NOW)));
    }

    #[test]
    fn malformed_jwts_are_errors_not_panics() {
        for input in [
            String::new(),
            "a.b".into(),
            "a.b.c.d".into(),
            "a.!!!.c".into(),
            format!("a.{}.c", URL_SAFE_NO_PAD.encode("not json")),
            jwt(r#"{"exp":"tomorrow"}"#),
            jwt(r#"{"aud":"https://eventhubs.azure.net"}"#),
            jwt("[1,2]"),
        ] {
            let err = verify_jwt(&input, "hub1", NOW).unwrap_err();
            assert!(
                matches!(err, TokenError::Malformed { .. }),
                "{input:?}: {err:?}"
            );
        }
    }

    #[test]
    fn token_type_selects_the_verifier() {
        let sas_type = "servicebus.windows.net:sastoken";
        assert_eq!(TokenKind::from_type(sas_type), Some(TokenKind::Sas));
        assert_eq!(TokenKind::from_type("JWT"), Some(TokenKind::Jwt));
        assert_eq!(TokenKind::from_type("saml"), None);
        let token = python_token("sb://h/hub1", NOW + 60);
        let verify = |token_type| verify_token(token_type, &token, &keys(), "hub1", NOW);
        assert!(verify(sas_type).is_ok());
        assert!(matches!(verify("jwt"), Err(TokenError::Malformed { .. })));
        let token_type = "saml".to_string();
        let unsupported = TokenError::UnsupportedType { token_type };
        assert_eq!(verify("saml"), Err(unsupported));
    }

    #[test]
    fn debug_of_a_key_redacts_the_secret() {
        let rendered = format!("{:?}", SasKey::new(KEY_NAME, KEY));
        assert!(rendered.contains(KEY_NAME) && rendered.contains("redacted"));
        assert!(!rendered.contains(KEY));
    }
}
