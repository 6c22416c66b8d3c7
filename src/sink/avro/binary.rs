//! A serde `Serializer` for Avro's binary encoding, for the one record shape hubcap writes.
//!
//! The Capture record (`EventRecord` and its maps and unions) derives or implements `Serialize`;
//! this serializer writes it straight into the open block with no allocation per event:
//! longs as zigzag varints, doubles as 8 little-endian bytes, strings and bytes length-prefixed,
//! a map as one block (count, entries, 0), a union as its branch index then the value (serde's
//! variant index is the union index; `Option` is `["null", T]`), a record as its fields in
//! order. Anything else in the record is a programming error and is reported, never written.

use serde::ser::{self, Serialize};

/// Encodes `value` in Avro binary at the end of `out`.
pub fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    value.serialize(&mut AvroSerializer { out })
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EncodeError(String);

impl ser::Error for EncodeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        EncodeError(msg.to_string())
    }
}

fn unsupported(what: &str) -> EncodeError {
    EncodeError(format!("{what} has no place in the Capture record"))
}

/// Appends `n` as an Avro long: zigzag, then base-128 varint.
pub fn write_long(n: i64, out: &mut Vec<u8>) {
    let mut zigzag = ((n << 1) ^ (n >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn write_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    write_long(bytes.len() as i64, out);
    out.extend_from_slice(bytes);
}

struct AvroSerializer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a, 'b> ser::Serializer for &'b mut AvroSerializer<'a> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = ser::Impossible<(), EncodeError>;
    type SerializeTuple = ser::Impossible<(), EncodeError>;
    type SerializeTupleStruct = ser::Impossible<(), EncodeError>;
    type SerializeTupleVariant = ser::Impossible<(), EncodeError>;
    type SerializeMap = MapBlock<'a, 'b>;
    type SerializeStruct = Self;
    type SerializeStructVariant = ser::Impossible<(), EncodeError>;

    fn serialize_bool(self, _: bool) -> Result<(), EncodeError> {
        Err(unsupported("a boolean"))
    }
    fn serialize_i8(self, v: i8) -> Result<(), EncodeError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<(), EncodeError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<(), EncodeError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result<(), EncodeError> {
        write_long(v, self.out);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), EncodeError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_u16(self, v: u16) -> Result<(), EncodeError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result<(), EncodeError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_u64(self, v: u64) -> Result<(), EncodeError> {
        let v = i64::try_from(v).map_err(|_| unsupported("an unsigned long above 2^63-1"))?;
        self.serialize_i64(v)
    }
    fn serialize_f32(self, v: f32) -> Result<(), EncodeError> {
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), EncodeError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, _: char) -> Result<(), EncodeError> {
        Err(unsupported("a char"))
    }
    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        write_bytes(v.as_bytes(), self.out);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        write_bytes(v, self.out);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), EncodeError> {
        write_long(0, self.out);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), EncodeError> {
        write_long(1, self.out);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), EncodeError> {
        Err(unsupported("a unit"))
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), EncodeError> {
        Err(unsupported("a unit struct"))
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), EncodeError> {
        Err(unsupported("a unit variant"))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        variant_index: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        write_long(i64::from(variant_index), self.out);
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, EncodeError> {
        Err(unsupported("an array"))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, EncodeError> {
        Err(unsupported("a tuple"))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, EncodeError> {
        Err(unsupported("a tuple struct"))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, EncodeError> {
        Err(unsupported("a tuple variant"))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, EncodeError> {
        let len = len.ok_or_else(|| unsupported("a map of unknown length"))?;
        // One block holding every entry (none: the terminating 0 alone).
        if len > 0 {
            write_long(len as i64, self.out);
        }
        Ok(MapBlock { serializer: self })
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, EncodeError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, EncodeError> {
        Err(unsupported("a struct variant"))
    }
}

impl ser::SerializeStruct for &mut AvroSerializer<'_> {
    type Ok = ();
    type Error = EncodeError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), EncodeError> {
        Ok(())
    }
}

pub struct MapBlock<'a, 'b> {
    serializer: &'b mut AvroSerializer<'a>,
}

impl ser::SerializeMap for MapBlock<'_, '_> {
    type Ok = ();
    type Error = EncodeError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), EncodeError> {
        key.serialize(&mut *self.serializer)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        value.serialize(&mut *self.serializer)
    }

    fn end(self) -> Result<(), EncodeError> {
        write_long(0, self.serializer.out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_are_zigzag_varints() {
        for (n, expected) in [
            (0i64, vec![0x00]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
            (
                i64::MAX,
                vec![0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
            (
                i64::MIN,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            write_long(n, &mut out);
            assert_eq!(out, expected, "{n}");
        }
    }

    #[test]
    fn options_maps_and_unsupported_shapes() {
        let mut out = Vec::new();
        encode(&Some("ab"), &mut out).unwrap();
        assert_eq!(out, [0x02, 0x04, b'a', b'b']);
        out.clear();
        encode(&None::<&str>, &mut out).unwrap();
        assert_eq!(out, [0x00]);
        out.clear();
        encode(&std::collections::BTreeMap::<String, i64>::new(), &mut out).unwrap();
        assert_eq!(out, [0x00]);
        out.clear();
        encode(
            &std::collections::BTreeMap::from([("k".to_owned(), 3i64)]),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [0x02, 0x02, b'k', 0x06, 0x00]);
        assert!(encode(&true, &mut Vec::new()).is_err());
        assert!(encode(&vec![1, 2], &mut Vec::new()).is_err());
    }
}
