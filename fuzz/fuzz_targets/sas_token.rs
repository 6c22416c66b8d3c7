//! The emulator's put-token verifier (`emulator/src/token.rs`): SAS tokens against shared
//! access keys, Entra ID JWTs on their claims.
//!
//! Besides never panicking on any token: no refusal shows the key; a token the emulator's
//! signer (the Python SDK's spelling) or hubcap's client signer made verifies for its own
//! resource until it expires; and a one-byte change to a signed token is refused, unless the
//! change is one the format itself ignores.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use arbitrary::Arbitrary;
use hubcap::secret::Secret;
use hubcap_emulator::token::{
    generate_sas_token, normalize_resource, resource_covers, verify_jwt, verify_sas, verify_token,
    SasKey, TokenError,
};
use libfuzzer_sys::fuzz_target;

/// Starts every key: no refusal may contain it.
const KEY_MARKER: &str = "FuzzLeakKey";
/// How far a fuzzed expiry or token lifetime reaches: a hundred years of seconds.
const SPAN: u64 = 100 * 365 * 86_400;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// Verified as is, as a SAS token and as a JWT.
    token: &'a str,
    token_type: &'a str,
    audience: &'a str,
    key_name: &'a str,
    /// The rest of the key, after the marker.
    key: &'a str,
    /// What the signers sign a token for.
    resource: &'a str,
    now: u32,
    lifetime: u32,
    /// Where and how the signed token is changed.
    change_at: usize,
    change_to: u8,
}

fn assert_no_key(result: &Result<impl std::fmt::Debug, TokenError>) {
    if let Err(error) = result {
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains(KEY_MARKER), "the key shows: {shown}");
    }
}

/// Whether changing `token[at]` to `to` leaves a token meaning the same: the separator after
/// `SharedAccessSignature` is any whitespace, and a hex digit of a `%XX` escape in `sig` or
/// `skn` (both percent-decoded before use; `sr` is signed as written) may change case.
fn same_meaning(token: &str, at: usize, to: u8) -> bool {
    let bytes = token.as_bytes();
    if at == "SharedAccessSignature".len() {
        // The verifier takes any whitespace there (`char::is_whitespace`, vertical tab
        // included, which `is_ascii_whitespace` leaves out: found by this target).
        return char::from(to).is_whitespace();
    }
    let from = bytes[at];
    let in_escape = (at >= 1 && bytes[at - 1] == b'%') || (at >= 2 && bytes[at - 2] == b'%');
    let field = token[..at].rsplit('&').next().unwrap_or_default();
    let decoded_field = field.starts_with("sig=") || field.starts_with("skn=");
    // The key name is form-decoded, as both signers encode it: '+' and a literal space both
    // mean a space (found by this target once the emulator decoded it so).
    let same_space = field.starts_with("skn=") && matches!((from, to), (b'+', b' ') | (b' ', b'+'));
    same_space
        || in_escape
            && decoded_field
            && from.is_ascii_hexdigit()
            && from.is_ascii_alphabetic()
            && to == from ^ 0x20
}

fuzz_target!(|input: Input| {
    let checked = ![input.token, input.audience, input.key_name, input.resource]
        .iter()
        .any(|text| text.to_lowercase().contains(&KEY_MARKER.to_lowercase()));
    let key = format!("{KEY_MARKER}{}", input.key);
    let keys = [SasKey::new(input.key_name, key.as_str())];
    let now = u64::from(input.now);

    let verified = verify_token(input.token_type, input.token, &keys, input.audience, now);
    let as_sas = verify_sas(input.token, &keys, input.audience, now);
    let as_jwt = verify_jwt(input.token, input.audience, now);
    if checked {
        assert_no_key(&verified);
        assert_no_key(&as_sas);
    }
    if let Ok(granted) = &as_jwt {
        assert!(granted.expires_at_unix > now && granted.resource.is_empty());
    }
    if let Ok(granted) = &as_sas {
        assert!(granted.expires_at_unix > now);
        assert!(resource_covers(
            &granted.resource,
            &normalize_resource(input.audience)
        ));
    }
    let normalized = normalize_resource(input.audience);
    assert!(resource_covers(&normalized, &normalized) && resource_covers("", &normalized));

    // Round trips. The audience is the resource itself, as a client asks for the hub it
    // signed for; `%` (which normalizing the audience decodes) and ` ` (which `quote_plus`
    // writes as `+`) would name another resource, and an empty one none (the emulator
    // refuses an empty `sr`, as a token must name what it grants).
    if input.key_name.is_empty() || input.resource.is_empty() || input.resource.contains(['%', ' '])
    {
        return;
    }
    let expiry = now + u64::from(input.lifetime) % SPAN;
    let token = generate_sas_token(input.resource, input.key_name, &key, expiry);
    let result = verify_sas(&token, &keys, input.resource, now);
    if expiry > now {
        let granted = result.unwrap_or_else(|e| panic!("{token:?} refused: {e}"));
        assert_eq!(granted.expires_at_unix, expiry);
        assert_eq!(granted.resource, normalize_resource(input.resource));
    } else {
        assert!(
            matches!(result, Err(TokenError::Expired { .. })),
            "{result:?}"
        );
    }

    // hubcap's own client signer, against the emulator.
    let lifetime = Duration::from_secs(1 + u64::from(input.lifetime) % SPAN);
    let signed = hubcap::eventhubs::testing::sign(
        input.resource,
        input.key_name,
        &Secret::new(key.as_str()),
        UNIX_EPOCH + Duration::from_secs(now),
        lifetime,
    );
    let result = verify_sas(signed.token.expose(), &keys, input.resource, now);
    assert!(
        result.is_ok(),
        "hubcap's {:?} refused: {result:?}",
        signed.token.expose()
    );

    // One byte changed.
    if expiry <= now || token.is_empty() {
        return;
    }
    let at = input.change_at % token.len();
    let mut changed = token.clone().into_bytes();
    changed[at] = input.change_to;
    let Ok(changed) = String::from_utf8(changed) else {
        return;
    };
    if changed != token && !same_meaning(&token, at, input.change_to) {
        let result = verify_sas(&changed, &keys, input.resource, now);
        assert!(
            result.is_err(),
            "{changed:?} (changed from {token:?}) verified"
        );
    }
});
