//! Event Hubs connection strings and namespaces, Storage connection strings, container SAS
//! URLs and account URLs: everything a config's credentials are parsed from.
//!
//! Besides never panicking: a secret spliced into an input (after `SharedAccessKey=`,
//! `SharedAccessSignature=`, `AccountKey=` or `sig=`) never shows in a `Debug` of the result
//! or in an error, and a parsed namespace prints back to itself.
#![no_main]

use arbitrary::Arbitrary;
use hubcap::credential::CredentialSpec;
use hubcap::eventhubs::{ConnectionString, FullyQualifiedNamespace};
use hubcap::secret::Secret;
use hubcap::storage::StorageAccount;
use libfuzzer_sys::fuzz_target;

/// Starts every spliced secret; the fuzzer never sees it compared, so it cannot type it.
const MARKER: &str = "FuzzLeakSecret";

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// Parsed as it is, by every parser.
    text: &'a str,
    /// Text before and after the spliced secret.
    before: &'a str,
    after: &'a str,
    /// The rest of the spliced secret, after the marker.
    secret: &'a str,
    /// The container the storage account must reach.
    container: &'a str,
}

fn assert_hidden(shown: &str) {
    assert!(!shown.contains(MARKER), "secret shown: {shown}");
}

/// `ConnectionString::parse`, checking what its result shows.
fn event_hubs(text: &str, check: bool) {
    match ConnectionString::parse(text) {
        Ok(parsed) => {
            if check {
                assert_hidden(&format!("{parsed:?}"));
            }
            let namespace = parsed.fully_qualified_namespace();
            assert!(namespace.starts_with(&parsed.host), "{namespace}");
        }
        Err(error) if check => assert_hidden(&format!("{error} {error:?}")),
        Err(_) => {}
    }
}

/// `StorageAccount::check`, what `check-config` and the daemon's start run, for each kind.
fn storage(account: StorageAccount, container: &str, check: bool) {
    match account.check(container) {
        Err(error) if check => assert_hidden(&format!("{error} {error:?}")),
        _ => {}
    }
    if check {
        assert_hidden(&format!("{account:?}"));
    }
}

fuzz_target!(|input: Input| {
    event_hubs(input.text, false);
    if let Ok(namespace) = FullyQualifiedNamespace::parse(input.text) {
        let printed = namespace.to_string();
        assert_eq!(FullyQualifiedNamespace::parse(&printed), Ok(namespace));
    }
    let container = input.container;
    storage(
        StorageAccount::ConnectionString(Secret::new(input.text)),
        container,
        false,
    );
    storage(
        StorageAccount::ContainerUrl(Secret::new(input.text)),
        container,
        false,
    );
    let account_url = input.text.to_owned();
    // `check` never builds the credential (that reads the process environment).
    let credential = CredentialSpec::WorkloadIdentity;
    storage(
        StorageAccount::AccountUrl {
            account_url,
            credential,
        },
        container,
        false,
    );

    let check = ![input.before, input.after, input.secret, input.container]
        .iter()
        .any(|part| part.contains(MARKER));
    let (before, secret, after) = (input.before, input.secret, input.after);
    for keyword in ["SharedAccessKey", "SharedAccessSignature"] {
        event_hubs(
            &format!("{before};{keyword}={MARKER}{secret};{after}"),
            check,
        );
    }
    for keyword in ["AccountKey", "SharedAccessSignature"] {
        let text = format!("{before};{keyword}={MARKER}{secret};{after}");
        storage(
            StorageAccount::ConnectionString(Secret::new(text)),
            container,
            check,
        );
    }
    // In the query: `before` may already have one (then the marker is still in it) or a
    // fragment (which no message quotes either).
    let url = format!("{before}?{after}&sig={MARKER}{secret}");
    storage(
        StorageAccount::ContainerUrl(Secret::new(url)),
        container,
        check,
    );
});
