//! Mapping of link source and target addresses to the Event Hubs node they name.
//!
//! Each SDK spells the same node differently: Python and Rust send a full URL
//! (`amqps://host:port/hub/ConsumerGroups/$Default/Partitions/0`), .NET the URL path with a
//! leading slash, Go and older clients the bare path. The scheme and host are dropped because the
//! emulator serves a single namespace under whatever name the client used to reach it.

use percent_encoding::percent_decode_str;

const CBS_NODE: &str = "$cbs";
const MANAGEMENT_NODE: &str = "$management";
const CONSUMER_GROUPS_KEYWORD: &str = "ConsumerGroups";
const PARTITIONS_KEYWORD: &str = "Partitions";
const PUBLISHERS_KEYWORD: &str = "Publishers";

/// Why a link address names no node the emulator serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("unsupported link address '{address}': {reason}")]
    Unsupported {
        address: String,
        reason: &'static str,
    },
}

/// An Event Hubs node a link can attach to. Hub and consumer group names keep the client's
/// spelling; the service treats them case-insensitively, so callers compare them that way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// The claims-based security node that takes `put-token` requests.
    Cbs,
    /// The request/response node for hub and partition properties.
    Management,
    /// A hub as a whole: senders let the service pick the partition.
    Hub { hub: String },
    /// One partition of a hub, as a sender target.
    HubPartition { hub: String, partition: String },
    /// One partition as read through a consumer group, as a receiver source.
    ConsumerGroupPartition {
        hub: String,
        consumer_group: String,
        partition: String,
    },
}

/// Parses a link address such as `amqps://127.0.0.1:5672/hub1/ConsumerGroups/$Default/Partitions/0`.
pub fn parse_address(address: &str) -> Result<Node, AddressError> {
    let unsupported = |reason| AddressError::Unsupported {
        address: address.to_string(),
        reason,
    };
    let path = strip_scheme_and_authority(address.trim()).trim_matches('/');
    if path.is_empty() {
        return Err(unsupported("no node named"));
    }
    let segments = path
        .split('/')
        .map(|segment| percent_decode_str(segment).decode_utf8())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| unsupported("a segment is not utf-8 after percent-decoding"))?;
    if segments.iter().any(|segment| segment.is_empty()) {
        return Err(unsupported("empty path segment"));
    }
    // The Rust SDK addresses management as `<hub>/ConsumerGroups/<cg>/$management`, so the
    // well-known nodes are recognised by their last segment whatever precedes them.
    let last = segments[segments.len() - 1].as_ref();
    if last.eq_ignore_ascii_case(CBS_NODE) {
        return Ok(Node::Cbs);
    }
    if last.eq_ignore_ascii_case(MANAGEMENT_NODE) {
        return Ok(Node::Management);
    }
    let is = |segment: &str, keyword: &str| segment.eq_ignore_ascii_case(keyword);
    match segments.iter().map(AsRef::as_ref).collect::<Vec<&str>>()[..] {
        [hub] => Ok(Node::Hub {
            hub: hub.to_string(),
        }),
        [hub, keyword, partition] if is(keyword, PARTITIONS_KEYWORD) => Ok(Node::HubPartition {
            hub: hub.to_string(),
            partition: partition.to_string(),
        }),
        [hub, keyword, consumer_group, partitions, partition]
            if is(keyword, CONSUMER_GROUPS_KEYWORD) && is(partitions, PARTITIONS_KEYWORD) =>
        {
            Ok(Node::ConsumerGroupPartition {
                hub: hub.to_string(),
                consumer_group: consumer_group.to_string(),
                partition: partition.to_string(),
            })
        }
        [_, keyword, ..] if is(keyword, PUBLISHERS_KEYWORD) => {
            Err(unsupported("publisher addresses are not supported"))
        }
        [_, keyword, _] if is(keyword, CONSUMER_GROUPS_KEYWORD) => Err(unsupported(
            "a consumer group address must name a partition",
        )),
        _ => Err(unsupported(
            "expected <hub>, <hub>/Partitions/<p> or <hub>/ConsumerGroups/<cg>/Partitions/<p>",
        )),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(hub: &str) -> Node {
        Node::Hub { hub: hub.into() }
    }

    fn hub_partition(hub: &str, partition: &str) -> Node {
        Node::HubPartition {
            hub: hub.into(),
            partition: partition.into(),
        }
    }

    fn consumer_partition(hub: &str, consumer_group: &str, partition: &str) -> Node {
        Node::ConsumerGroupPartition {
            hub: hub.into(),
            consumer_group: consumer_group.into(),
            partition: partition.into(),
        }
    }

    fn assert_parses(cases: &[(&str, Node)]) {
        for (address, expected) in cases {
            assert_eq!(parse_address(address).as_ref(), Ok(expected), "{address:?}");
        }
    }

    #[test]
    fn python_full_urls_with_port() {
        assert_parses(&[
            ("amqps://127.0.0.1:5672/hub1", hub("hub1")),
            (
                "amqps://127.0.0.1:5672/hub1/Partitions/3",
                hub_partition("hub1", "3"),
            ),
            (
                "amqps://localhost:5672/hub1/ConsumerGroups/$Default/Partitions/0",
                consumer_partition("hub1", "$Default", "0"),
            ),
            ("amqps://localhost:5672/$cbs", Node::Cbs),
            ("amqps://localhost:5672/hub1/$management", Node::Management),
        ]);
    }

    #[test]
    fn rust_full_urls_including_management_under_a_consumer_group() {
        assert_parses(&[
            (
                "amqps://myns.servicebus.windows.net/hub1/ConsumerGroups/$Default/Partitions/1",
                consumer_partition("hub1", "$Default", "1"),
            ),
            (
                "amqps://myns.servicebus.windows.net/hub1/ConsumerGroups/$Default/$management",
                Node::Management,
            ),
            ("amqps://h/$management", Node::Management),
            (
                "amqps://myns.servicebus.windows.net/hub1/Partitions/0",
                hub_partition("hub1", "0"),
            ),
        ]);
    }

    #[test]
    fn dotnet_paths_with_a_leading_slash() {
        assert_parses(&[
            ("/hub1", hub("hub1")),
            ("/hub1/Partitions/0", hub_partition("hub1", "0")),
            (
                "/hub1/ConsumerGroups/cg-1/Partitions/2",
                consumer_partition("hub1", "cg-1", "2"),
            ),
        ]);
    }

    #[test]
    fn go_bare_paths_and_well_known_nodes() {
        assert_parses(&[
            ("hub1", hub("hub1")),
            (
                "hub1/ConsumerGroups/$Default/Partitions/0",
                consumer_partition("hub1", "$Default", "0"),
            ),
            ("$cbs", Node::Cbs),
            ("$management", Node::Management),
            ("$CBS", Node::Cbs),
            ("$Management", Node::Management),
            ("/$cbs/", Node::Cbs),
        ]);
    }

    #[test]
    fn keywords_match_case_insensitively_and_names_keep_their_case() {
        assert_parses(&[
            (
                "MyHub/consumergroups/$default/partitions/0",
                consumer_partition("MyHub", "$default", "0"),
            ),
            (
                "MyHub/CONSUMERGROUPS/Readers/PARTITIONS/7",
                consumer_partition("MyHub", "Readers", "7"),
            ),
            ("MyHub/pArTiTiOnS/1", hub_partition("MyHub", "1")),
        ]);
    }

    #[test]
    fn trailing_slashes_whitespace_and_percent_encoding_are_tolerated() {
        assert_parses(&[
            ("hub1/", hub("hub1")),
            ("amqps://h/hub1/Partitions/0/", hub_partition("hub1", "0")),
            (" hub1 ", hub("hub1")),
            (
                "hub1/ConsumerGroups/%24Default/Partitions/0",
                consumer_partition("hub1", "$Default", "0"),
            ),
            ("%24cbs", Node::Cbs),
            ("amqp://h/hub%201", hub("hub 1")),
        ]);
    }

    #[test]
    fn addresses_naming_no_served_node_are_errors() {
        for address in [
            "",
            "/",
            "amqps://host",
            "amqps://host/",
            "hub1/Foo/1",
            "hub1/Partitions",
            "hub1/Partitions/0/extra",
            "hub1/ConsumerGroups/$Default",
            "hub1/ConsumerGroups/$Default/Partitions",
            "hub1/ConsumerGroups/$Default/Foo/0",
            "hub1/ConsumerGroups/$Default/Partitions/0/extra",
            "hub1/Publishers/device-1",
            "hub1//Partitions/0",
            "hub1/Partitions/%FF",
            "a/b/c/d/e/f/g/h",
        ] {
            let result = parse_address(address);
            assert!(
                matches!(&result, Err(AddressError::Unsupported { address: a, .. }) if a == address),
                "{address:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn errors_explain_the_unsupported_forms() {
        let err = parse_address("hub1/Publishers/device-1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported link address 'hub1/Publishers/device-1': publisher addresses are not supported"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let long = "é/".repeat(50_000);
        for address in [
            long.as_str(),
            "://",
            "://x",
            "a://",
            "%",
            "%%%/%",
            "ü://ß/ö",
            "\u{0}",
        ] {
            let _ = parse_address(address);
        }
    }
}
