//! The byte encoding desired objects are hashed through: what their JSON says, in a
//! form that is cheap to produce.
//!
//! Hashing only needs an encoding that is deterministic and injective (two different
//! objects never encode alike), not one anybody reads back. JSON is both, but
//! producing it escapes every string byte by byte and formats every number, which
//! was a fifth of a converged reconcile. Here every value is a one-byte tag followed
//! by fixed-width little-endian numbers, length-prefixed strings, or the tagged
//! values of a container up to its closing tag: no escaping, no formatting, and the
//! same bytes on every target.
//!
//! It follows the JSON data model, so values that serialize to the same JSON
//! encode alike: `Some(x)` as `x`, a struct as a map of its fields in declaration
//! order, a newtype as its content; maps iterate in their own (sorted, for
//! `BTreeMap` and `serde_json::Value`) order.

use serde::Serialize;
use serde::ser;

/// Appends the encoding of `value` to `out`.
pub fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    value.serialize(&mut Encoder { out })
}

mod tag {
    pub const NULL: u8 = b'n';
    pub const FALSE: u8 = b'f';
    pub const TRUE: u8 = b't';
    pub const SIGNED: u8 = b'i';
    pub const UNSIGNED: u8 = b'u';
    pub const FLOAT: u8 = b'd';
    pub const STRING: u8 = b's';
    pub const BYTES: u8 = b'y';
    pub const VARIANT: u8 = b'v';
    pub const SEQ: u8 = b'[';
    pub const SEQ_END: u8 = b']';
    pub const MAP: u8 = b'{';
    pub const MAP_END: u8 = b'}';
}

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
}

impl Encoder<'_> {
    fn string(&mut self, value: &[u8], tag: u8) {
        self.out.push(tag);
        self.out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        self.out.extend_from_slice(value);
    }

    fn variant(&mut self, name: &str) {
        self.out.push(tag::VARIANT);
        self.string(name.as_bytes(), tag::STRING);
    }
}

impl<'a, 'b> ser::Serializer for &'a mut Encoder<'b> {
    type Ok = ();
    type Error = serde_json::Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, value: bool) -> Result<(), Self::Error> {
        self.out.push(if value { tag::TRUE } else { tag::FALSE });
        Ok(())
    }

    fn serialize_i8(self, value: i8) -> Result<(), Self::Error> {
        self.serialize_i64(value.into())
    }

    fn serialize_i16(self, value: i16) -> Result<(), Self::Error> {
        self.serialize_i64(value.into())
    }

    fn serialize_i32(self, value: i32) -> Result<(), Self::Error> {
        self.serialize_i64(value.into())
    }

    fn serialize_i64(self, value: i64) -> Result<(), Self::Error> {
        // As in JSON, a number is a number: 3_i32 and 3_u64 encode alike.
        if let Ok(value) = u64::try_from(value) {
            return self.serialize_u64(value);
        }
        self.out.push(tag::SIGNED);
        self.out.extend_from_slice(&value.to_le_bytes());
        Ok(())
    }

    fn serialize_u8(self, value: u8) -> Result<(), Self::Error> {
        self.serialize_u64(value.into())
    }

    fn serialize_u16(self, value: u16) -> Result<(), Self::Error> {
        self.serialize_u64(value.into())
    }

    fn serialize_u32(self, value: u32) -> Result<(), Self::Error> {
        self.serialize_u64(value.into())
    }

    fn serialize_u64(self, value: u64) -> Result<(), Self::Error> {
        self.out.push(tag::UNSIGNED);
        self.out.extend_from_slice(&value.to_le_bytes());
        Ok(())
    }

    fn serialize_f32(self, value: f32) -> Result<(), Self::Error> {
        self.serialize_f64(value.into())
    }

    fn serialize_f64(self, value: f64) -> Result<(), Self::Error> {
        self.out.push(tag::FLOAT);
        self.out.extend_from_slice(&value.to_bits().to_le_bytes());
        Ok(())
    }

    fn serialize_char(self, value: char) -> Result<(), Self::Error> {
        self.serialize_str(value.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, value: &str) -> Result<(), Self::Error> {
        self.string(value.as_bytes(), tag::STRING);
        Ok(())
    }

    fn serialize_bytes(self, value: &[u8]) -> Result<(), Self::Error> {
        self.string(value, tag::BYTES);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), Self::Error> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Self::Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Self::Error> {
        self.out.push(tag::NULL);
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Self::Error> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Self::Error> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        self.variant(variant);
        value.serialize(self)
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self, Self::Error> {
        self.out.push(tag::SEQ);
        Ok(self)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self, Self::Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Self, Self::Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, Self::Error> {
        self.variant(variant);
        self.serialize_seq(Some(len))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self, Self::Error> {
        self.out.push(tag::MAP);
        Ok(self)
    }

    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Self, Self::Error> {
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, Self::Error> {
        self.variant(variant);
        self.serialize_map(Some(len))
    }
}

impl ser::SerializeSeq for &mut Encoder<'_> {
    type Ok = ();
    type Error = serde_json::Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), Self::Error> {
        self.out.push(tag::SEQ_END);
        Ok(())
    }
}

/// Tuples of every kind encode as sequences.
macro_rules! as_seq {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for &mut Encoder<'_> {
            type Ok = ();
            type Error = serde_json::Error;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
                ser::SerializeSeq::serialize_element(self, value)
            }

            fn end(self) -> Result<(), Self::Error> {
                ser::SerializeSeq::end(self)
            }
        }
    )*};
}
as_seq!(
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for &mut Encoder<'_> {
    type Ok = ();
    type Error = serde_json::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Self::Error> {
        key.serialize(&mut **self)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), Self::Error> {
        self.out.push(tag::MAP_END);
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Encoder<'_> {
    type Ok = ();
    type Error = serde_json::Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        self.string(key.as_bytes(), tag::STRING);
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), Self::Error> {
        ser::SerializeMap::end(self)
    }
}

impl ser::SerializeStructVariant for &mut Encoder<'_> {
    type Ok = ();
    type Error = serde_json::Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }

    fn end(self) -> Result<(), Self::Error> {
        ser::SerializeMap::end(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bytes<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        encode(value, &mut out).expect("encodes");
        out
    }

    #[test]
    fn layout_is_pinned() {
        // A change here changes every applied hash: each owned object is applied
        // once more after the module is updated.
        let value = json!({"a": [1, -1, true, null, 0.5], "b": "xy"});
        let mut expected = vec![b'{', b's', 1, 0, 0, 0, 0, 0, 0, 0, b'a', b'['];
        expected.extend([b'u', 1, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend([b'i', 255, 255, 255, 255, 255, 255, 255, 255]);
        expected.extend([b't', b'n', b'd']);
        expected.extend(0.5f64.to_bits().to_le_bytes());
        expected.extend([
            b']', b's', 1, 0, 0, 0, 0, 0, 0, 0, b'b', b's', 2, 0, 0, 0, 0, 0, 0, 0, b'x', b'y', b'}',
        ]);
        assert_eq!(bytes(&value), expected);
    }

    #[test]
    fn distinct_values_encode_differently() {
        let values = [
            json!(null),
            json!(""),
            json!("a"),
            json!(["a"]),
            json!(["a", ""]),
            json!(["", "a"]),
            json!({"a": ""}),
            json!({"": "a"}),
            json!([["a"]]),
            json!([[], "a"]),
            json!({"a": {"b": 1}}),
            json!({"a": {}, "b": 1}),
            json!(1),
            json!(-1),
            json!(1.0),
            json!(false),
            json!([null]),
        ];
        for (i, a) in values.iter().enumerate() {
            for b in &values[i + 1..] {
                assert_ne!(bytes(a), bytes(b), "{a} and {b}");
            }
        }
    }

    #[test]
    fn follows_the_json_data_model() {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Typed {
            api_version: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            absent: Option<u8>,
            list: Vec<u16>,
            present: Option<i32>,
        }
        // Fields in sorted order, as the JSON tree holds them.
        let typed = Typed { api_version: "v1", absent: None, list: vec![7], present: Some(3) };
        let same_json = serde_json::to_value(&typed).expect("to JSON");
        assert_eq!(bytes(&typed), bytes(&same_json));
    }
}
