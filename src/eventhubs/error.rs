//! Event Hubs errors and what to do about each.

use std::fmt;

pub use crate::recovery::Recovery;

#[derive(Debug, thiserror::Error)]
pub enum EventHubsError {
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("connection to event hubs lost: {reason}")]
    ConnectionLost { reason: String },
    #[error("event hubs refused the credentials for {audience}: {description}")]
    Unauthorized {
        audience: String,
        description: String,
    },
    #[error("{operation} timed out after {seconds} s")]
    Timeout {
        operation: &'static str,
        seconds: u64,
    },
    /// An AMQP error condition sent by the service on a link or connection.
    #[error("{context}: {condition}: {description}")]
    Amqp {
        context: &'static str,
        condition: String,
        description: String,
    },
    #[error("management request {operation} failed with status {status}: {description}")]
    Management {
        operation: String,
        status: i32,
        description: String,
    },
    #[error("unexpected response from event hubs: {reason}")]
    Protocol { reason: String },
    #[error("invalid client settings: {reason}")]
    Settings { reason: String },
}

pub const LINK_STOLEN: &str = "amqp:link:stolen";

impl EventHubsError {
    pub fn recovery(&self) -> Recovery {
        match self {
            EventHubsError::Connect { .. } | EventHubsError::ConnectionLost { .. } => {
                Recovery::Reconnect
            }
            EventHubsError::Unauthorized { .. } | EventHubsError::Settings { .. } => {
                Recovery::Fatal
            }
            EventHubsError::Timeout { .. } | EventHubsError::Protocol { .. } => Recovery::Reconnect,
            EventHubsError::Management { status, .. } => match status {
                401 | 403 | 404 => Recovery::Fatal,
                _ => Recovery::Retry,
            },
            EventHubsError::Amqp { condition, .. } => classify_condition(condition),
        }
    }

    /// A short, bounded label for metrics (`error_type`).
    pub fn kind(&self) -> &'static str {
        match self {
            EventHubsError::Connect { .. } => "connect",
            EventHubsError::ConnectionLost { .. } => "connection_lost",
            EventHubsError::Unauthorized { .. } => "unauthorized",
            EventHubsError::Timeout { .. } => "timeout",
            EventHubsError::Amqp { condition, .. } => match condition.as_str() {
                LINK_STOLEN => "link_stolen",
                "com.microsoft:server-busy" => "server_busy",
                "amqp:link:detach-forced" => "detach_forced",
                "com.microsoft:argument-out-of-range" => "position_unavailable",
                _ => "amqp_error",
            },
            EventHubsError::Management { .. } => "management",
            EventHubsError::Protocol { .. } => "protocol",
            EventHubsError::Settings { .. } => "settings",
        }
    }
}

/// Maps a service error condition to a recovery (see the protocol reference, section 7).
pub fn classify_condition(condition: &str) -> Recovery {
    match condition {
        LINK_STOLEN => Recovery::PartitionLost,
        // The start position does not exist: read again from one that does.
        "com.microsoft:argument-out-of-range" => Recovery::Reread,
        "amqp:unauthorized-access" | "com.microsoft:auth-failed" => Recovery::Fatal,
        "amqp:not-found" | "com.microsoft:entity-disabled" => Recovery::Fatal,
        "amqp:connection:forced" | "amqp:connection:framing-error" => Recovery::Reconnect,
        // server-busy, timeout, detach-forced, internal-error, operation-cancelled,
        // resource-limit-exceeded, entity-updated and anything unknown: try again.
        _ => Recovery::Retry,
    }
}

/// An error the service sent on a link or connection, with its condition as the symbol text.
pub(crate) fn from_amqp(
    context: &'static str,
    error: &fe2o3_amqp::types::definitions::Error,
) -> EventHubsError {
    let condition = match serde_amqp::to_value(&error.condition) {
        Ok(fe2o3_amqp::types::primitives::Value::Symbol(symbol)) => symbol.0,
        _ => format!("{:?}", error.condition),
    };
    EventHubsError::Amqp {
        context,
        condition,
        description: error.description.clone().unwrap_or_default(),
    }
}

/// Wraps a displayable fe2o3 error for the `reason` fields, without leaking its type.
pub(crate) fn reason(error: impl fmt::Display) -> String {
    error.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amqp(condition: &str) -> EventHubsError {
        EventHubsError::Amqp {
            context: "receive",
            condition: condition.into(),
            description: String::new(),
        }
    }

    #[test]
    fn every_condition_maps_to_a_recovery() {
        assert_eq!(amqp("amqp:link:stolen").recovery(), Recovery::PartitionLost);
        assert_eq!(
            amqp("com.microsoft:server-busy").recovery(),
            Recovery::Retry
        );
        assert_eq!(amqp("amqp:link:detach-forced").recovery(), Recovery::Retry);
        assert_eq!(amqp("amqp:unauthorized-access").recovery(), Recovery::Fatal);
        assert_eq!(amqp("amqp:not-found").recovery(), Recovery::Fatal);
        assert_eq!(
            amqp("com.microsoft:argument-out-of-range").recovery(),
            Recovery::Reread
        );
        assert_eq!(
            amqp("amqp:connection:forced").recovery(),
            Recovery::Reconnect
        );
        assert_eq!(amqp("something:new").recovery(), Recovery::Retry);
        let lost = EventHubsError::ConnectionLost {
            reason: "eof".into(),
        };
        assert_eq!(lost.recovery(), Recovery::Reconnect);
        assert_eq!(amqp("amqp:link:stolen").kind(), "link_stolen");
    }
}
