//! The metadata of ownership and checkpoint records: the SDKs' keys and hubcap's own, defined
//! once here for both stores (blob metadata, the file store's JSON uses the same names).
//!
//! | record | key | written by | value |
//! |---|---|---|---|
//! | ownership | `ownerid` | every processor | owner id, `""` = released |
//! | ownership | `hubcapcommitfirst`, `hubcapcommitlast` | hubcap | sequence numbers of the window being committed |
//! | ownership | `hubcapcommitname` | hubcap | its file or blob name, percent-encoded |
//! | checkpoint | `offset`, `sequencenumber` | every processor | the last processed event |
//! | checkpoint | `hubcapcommitted` | hubcap | the file or blob holding that event, percent-encoded |
//!
//! The SDK processors read only their own keys and replace the whole metadata when they write a
//! record, so a hand-over to an SDK processor drops hubcap's keys (and is at-least-once, as the
//! SDKs are). Older hubcap versions ignore the new keys the same way.
//!
//! The commit record is the exactly-once protocol's memory: before a window's file or blob is
//! committed, its owner writes `(first, last, name)` into the ownership record (a compare-and-swap
//! that is also the fence); whoever owns the partition next finds it there and finishes that
//! window under that name rather than making a second copy. The protocol is described in
//! `docs/exactly-once.md`.

use std::collections::HashMap;

/// Owner id key (the SDKs').
pub const OWNER_ID: &str = "ownerid";
/// Offset key (the SDKs').
pub const OFFSET: &str = "offset";
/// Sequence number key (the SDKs').
pub const SEQUENCE_NUMBER: &str = "sequencenumber";
/// First sequence number of the window being committed (hubcap).
pub const COMMIT_FIRST: &str = "hubcapcommitfirst";
/// Last sequence number of the window being committed (hubcap).
pub const COMMIT_LAST: &str = "hubcapcommitlast";
/// Name of the window being committed (hubcap).
pub const COMMIT_NAME: &str = "hubcapcommitname";
/// Name of the file or blob holding a checkpoint's event (hubcap).
pub const COMMITTED_IN: &str = "hubcapcommitted";

/// A window on its way into the archive: its events, by sequence number, and the name it is
/// committed under (relative to the sink's root or container).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitRecord {
    pub first_sequence_number: i64,
    pub last_sequence_number: i64,
    pub name: String,
}

impl CommitRecord {
    /// Adds the record's keys to `metadata`.
    pub fn write(&self, metadata: &mut HashMap<String, String>) {
        metadata.insert(
            COMMIT_FIRST.to_owned(),
            self.first_sequence_number.to_string(),
        );
        metadata.insert(
            COMMIT_LAST.to_owned(),
            self.last_sequence_number.to_string(),
        );
        metadata.insert(COMMIT_NAME.to_owned(), encode_name(&self.name));
    }

    /// The record in `metadata`, if it holds a complete, readable one. A partial or garbled
    /// record is ignored (treated as none): that only costs exactly-once for one window.
    pub fn read(metadata: &HashMap<String, String>) -> Option<Self> {
        let number = |key: &str| metadata.get(key)?.parse::<i64>().ok();
        let record = Self {
            first_sequence_number: number(COMMIT_FIRST)?,
            last_sequence_number: number(COMMIT_LAST)?,
            name: decode_name(metadata.get(COMMIT_NAME)?)?,
        };
        (record.first_sequence_number <= record.last_sequence_number && !record.name.is_empty())
            .then_some(record)
    }
}

/// Percent-encodes every byte but unreserved characters and `/`: metadata values travel as
/// HTTP headers, which take only visible ASCII.
pub fn encode_name(name: &str) -> String {
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The inverse of [`encode_name`]; `None` for a malformed value.
pub fn decode_name(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = encoded.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_survive_encoding_and_only_visible_ascii_is_written() {
        for name in ["ns/hub/0/2026/12/02/10/00/00.avro", "a b/ü%/x-1.avro", ""] {
            let encoded = encode_name(name);
            assert!(encoded.bytes().all(|b| b.is_ascii_graphic()), "{encoded}");
            assert_eq!(decode_name(&encoded).as_deref(), Some(name));
        }
        assert_eq!(decode_name("bad%zz"), None);
        assert_eq!(decode_name("cut%4"), None);
    }

    #[test]
    fn a_record_round_trips_and_a_partial_one_is_none() {
        let record = CommitRecord {
            first_sequence_number: 10,
            last_sequence_number: 19,
            name: "ns/hub/3/x y.avro".into(),
        };
        let mut metadata = HashMap::from([(OWNER_ID.to_owned(), "me".to_owned())]);
        record.write(&mut metadata);
        assert_eq!(CommitRecord::read(&metadata), Some(record));
        metadata.remove(COMMIT_NAME);
        assert_eq!(CommitRecord::read(&metadata), None);
        let backwards = HashMap::from([
            (COMMIT_FIRST.to_owned(), "9".to_owned()),
            (COMMIT_LAST.to_owned(), "3".to_owned()),
            (COMMIT_NAME.to_owned(), "n".to_owned()),
        ]);
        assert_eq!(CommitRecord::read(&backwards), None);
    }
}
