//! Compression, as configured by `[sink] codec`: of Avro blocks, Parquet pages or a whole JSON
//! Lines file. Which codecs a format takes is checked by the config (`config::sink`).

/// A compression codec and its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// No compression (what Capture writes).
    Null,
    /// Avro only.
    Deflate {
        /// 0 (store) to 9 (smallest); 1 by default, fast with most of the gain.
        level: u32,
    },
    /// Avro and Parquet.
    Snappy,
    /// Every format.
    Zstd {
        /// 1 to 22; 3 by default.
        level: i32,
    },
    /// JSON Lines only (`.jsonl.gz`, a whole-file stream).
    Gzip {
        /// 0 to 9; 6 by default, as `gzip` itself.
        level: u32,
    },
}
