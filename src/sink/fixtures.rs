//! Events for the sinks' unit tests, shared by every format's tests.

use crate::eventhubs::{EventBody, PropertyValue, ReceivedEvent};

/// An event with no properties, enqueued at 2021-12-02T14:58:24.816Z.
pub fn event(sequence_number: i64, body: EventBody) -> ReceivedEvent {
    ReceivedEvent {
        sequence_number,
        offset: format!("{}", sequence_number * 1000),
        // 2021-12-02T14:58:24.816Z
        enqueued_time_ms: 1_638_457_104_816,
        partition_key: None,
        properties: Vec::new(),
        system_properties: Vec::new(),
        body,
    }
}

/// An event with one property of every kind and a body that is not UTF-8.
pub fn rich_event() -> ReceivedEvent {
    let uuid = [
        0x0f, 0x8f, 0xad, 0x5b, 0xd9, 0xcb, 0x46, 0x9f, 0xa1, 0x65, 0x70, 0x86, 0x77, 0x28, 0x95,
        0x0e,
    ];
    ReceivedEvent {
        partition_key: Some("device-7".into()),
        properties: vec![
            ("null".into(), PropertyValue::Null),
            ("yes".into(), PropertyValue::Bool(true)),
            ("no".into(), PropertyValue::Bool(false)),
            ("long".into(), PropertyValue::Long(-42)),
            ("ulong".into(), PropertyValue::UnsignedLong(u64::MAX)),
            ("double".into(), PropertyValue::Double(21.5)),
            ("string".into(), PropertyValue::String("héllo".into())),
            ("bytes".into(), PropertyValue::Bytes(vec![0, 0xff, 0xfe])),
            (
                "timestamp".into(),
                PropertyValue::Timestamp(1_638_457_104_816),
            ),
            ("uuid".into(), PropertyValue::Uuid(uuid)),
            ("other".into(), PropertyValue::Other("[1, 2]".into())),
        ],
        system_properties: vec![
            (
                "x-opt-publisher".into(),
                PropertyValue::String("buddy1234".into()),
            ),
            ("message-id".into(), PropertyValue::Uuid(uuid)),
            (
                "content-type".into(),
                PropertyValue::String("application/octet-stream".into()),
            ),
            // An annotation of an unexpected type must not duplicate the synthesized key.
            ("x-opt-partition-key".into(), PropertyValue::Long(3)),
        ],
        ..event(7, EventBody::Data(vec![vec![0xc3, 0x28, 0x00, 0xff, 0xfe]]))
    }
}
