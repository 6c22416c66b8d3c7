//! Avro block compression, as configured by `[sink] codec`.

/// Avro block compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// What Capture writes.
    Null,
    Deflate {
        /// 0 (store) to 9 (smallest); 1 by default, fast with most of the gain.
        level: u32,
    },
    Snappy,
    Zstd {
        /// 1 to 22; 3 by default.
        level: i32,
    },
}
