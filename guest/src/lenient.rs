//! Lenient decoding: a JSON value of an unexpected type reads as "absent" instead of
//! failing the whole document.
//!
//! The module reads a few fields of each observed object straight from the snapshot
//! in one pass, so it cannot decode an object, fail, and try again more loosely.
//! Each wrapper here accepts any JSON value instead: the expected type gives
//! `Some`, anything else is skipped (without building it) and gives `None`. A
//! struct made of these fields therefore decodes from any JSON object, so an odd
//! field never hides the rest of an object (a Percona cluster with a strange status
//! is still known to exist, and is never created again).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A string, or `None` for any other JSON value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Str<'a>(pub Option<Cow<'a, str>>);

/// An integer that fits an `i64`, or `None` for any other JSON value.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Int(pub Option<i64>);

/// A JSON object decoded as `T` (a struct of lenient fields, so that any object
/// decodes), or `None` for any other JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object<T>(pub Option<T>);

/// A JSON array of `T`s (each decoded leniently by `T` itself), or `None` for any
/// other JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List<T>(pub Option<Vec<T>>);

impl<T> Default for Object<T> {
    fn default() -> Self {
        Object(None)
    }
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List(None)
    }
}

/// How a lenient type reads each kind of JSON value. Every method defaults to
/// "not the expected type": skip the value (draining containers, so that the
/// deserializer stays in step) and read as absent.
trait Lenient<'de>: Default {
    fn from_str(_: Cow<'de, str>) -> Self {
        Self::default()
    }

    fn from_i64(_: i64) -> Self {
        Self::default()
    }

    fn from_u64(_: u64) -> Self {
        Self::default()
    }

    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Self::default())
    }

    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Self::default())
    }
}

/// The one visitor of every lenient type: any JSON value goes to `T`'s [`Lenient`]
/// method for its kind.
struct LenientVisitor<T>(PhantomData<T>);

impl<'de, T: Lenient<'de>> Visitor<'de> for LenientVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<T, E> {
        Ok(T::from_str(Cow::Borrowed(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        // A string that had to be unescaped: it cannot be borrowed from the input.
        Ok(T::from_str(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<T, E> {
        Ok(T::from_str(Cow::Owned(value)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        Ok(T::from_i64(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        Ok(T::from_u64(value))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::from_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_map(map)
    }
}

fn deserialize_lenient<'de, T: Lenient<'de>, D: Deserializer<'de>>(deserializer: D) -> Result<T, D::Error> {
    deserializer.deserialize_any(LenientVisitor(PhantomData))
}

impl<'de: 'a, 'a> Lenient<'de> for Str<'a> {
    fn from_str(value: Cow<'de, str>) -> Self {
        Str(Some(value))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_lenient(deserializer)
    }
}

impl Lenient<'_> for Int {
    fn from_i64(value: i64) -> Self {
        Int(Some(value))
    }

    fn from_u64(value: u64) -> Self {
        Int(i64::try_from(value).ok())
    }
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_lenient(deserializer)
    }
}

impl<'de, T: Deserialize<'de>> Lenient<'de> for Object<T> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(|value| Object(Some(value)))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_lenient(deserializer)
    }
}

impl<'de, T: Deserialize<'de>> Lenient<'de> for List<T> {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(List(Some(items)))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_lenient(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Sample<'a> {
        #[serde(borrow, default)]
        name: Str<'a>,
        #[serde(default)]
        count: Int,
        #[serde(default)]
        inner: Object<Inner>,
        #[serde(default)]
        items: List<Int>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Inner {
        #[serde(default)]
        n: Int,
    }

    fn read(json: &str) -> Sample<'_> {
        serde_json::from_str::<Sample<'_>>(json).expect("any JSON object decodes")
    }

    #[test]
    fn expected_types_are_read() {
        let sample =
            read(r#"{"name":"a\"b","count":-3,"inner":{"n":4,"x":[1]},"items":[1,"2",3],"other":{}}"#);
        assert_eq!(sample.name.0.as_deref(), Some("a\"b"));
        assert_eq!(sample.count, Int(Some(-3)));
        assert_eq!(sample.inner.0, Some(Inner { n: Int(Some(4)) }));
        assert_eq!(sample.items.0, Some(vec![Int(Some(1)), Int(None), Int(Some(3))]));
    }

    #[test]
    fn borrowed_when_unescaped() {
        let sample = read(r#"{"name":"plain"}"#);
        assert!(matches!(sample.name.0, Some(Cow::Borrowed("plain"))));
    }

    #[test]
    fn other_types_read_as_absent_and_the_rest_still_decodes() {
        let odd = [
            r#"{"name":5,"count":"x","inner":[1,{"a":2}],"items":{"a":[1]},"tail":1}"#,
            r#"{"name":{"a":{"b":[]}},"count":1.5,"inner":"s","items":null}"#,
            r#"{"name":null,"count":18446744073709551615,"inner":true,"items":"[]"}"#,
            r#"{"name":[],"count":{},"inner":null,"items":7}"#,
        ];
        for json in odd {
            assert_eq!(read(json), Sample::default(), "{json}");
        }
        let sample = read(r#"{"name":[1,[2]],"count":9}"#);
        assert_eq!(sample.count, Int(Some(9)), "a skipped value keeps the decoder in step");
    }

    #[test]
    fn top_level_values_of_any_type_decode() {
        for json in ["1", "\"s\"", "null", "[1,2]", "true", "{}"] {
            let object: Object<Inner> = serde_json::from_str(json).expect("decodes");
            assert_eq!(object.0.is_some(), json == "{}", "{json}");
        }
    }
}
