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
use serde_json::value::RawValue;

/// A string ([`Field::present`] for "a string, or nothing").
pub type Str<'a> = Field<Cow<'a, str>>;

/// An integer that fits an `i64` ([`Field::present`] for "an integer, or nothing").
pub type Int = Field<i64>;

/// A JSON object decoded as `T` (a struct of lenient fields, so that any object
/// decodes), or `None` for any other JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object<T>(pub Option<T>);

/// A JSON array of `T`s (each decoded leniently by `T` itself), or `None` for any
/// other JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List<T>(pub Option<Vec<T>>);

/// The XXH3-64 digest of a string, or `None` for any other JSON value: compares a
/// long string (a configuration file) with what it should be without copying it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StrDigest(pub Option<u64>);

impl StrDigest {
    /// The digest `text` has.
    pub fn of(text: &str) -> u64 {
        xxhash_rust::xxh3::xxh3_64(text.as_bytes())
    }
}

impl<'de> Lenient<'de> for StrDigest {
    fn from_str(value: Cow<'de, str>) -> Self {
        Self::from_str_ref(&value)
    }

    fn from_str_ref(value: &str) -> Self {
        StrDigest(Some(Self::of(value)))
    }
}

impl<'de> Deserialize<'de> for StrDigest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_lenient(deserializer)
    }
}

/// A value of one expected JSON type: read as such, absent (missing or `null`), or of
/// another type. [`Field::present`] reads the last two alike (an observed object's
/// odd field); [`Field::get`] tells them apart, for an error that names the field.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Field<T> {
    /// Missing or `null`.
    #[default]
    Absent,
    /// Of the expected type.
    Present(T),
    /// Of another type: this one (`"a string"`, `"an object"`, ...).
    Wrong(&'static str),
}

impl<T> Field<T> {
    /// The value when of the expected type; `None` when absent or of another.
    pub fn present(self) -> Option<T> {
        match self {
            Field::Present(value) => Some(value),
            Field::Absent | Field::Wrong(_) => None,
        }
    }

    /// The value, borrowed, when of the expected type.
    pub fn as_present(&self) -> Option<&T> {
        match self {
            Field::Present(value) => Some(value),
            Field::Absent | Field::Wrong(_) => None,
        }
    }

    /// The value; `Ok(None)` when absent, `Err(found)` when of another type.
    pub fn get(self) -> Result<Option<T>, &'static str> {
        match self {
            Field::Absent => Ok(None),
            Field::Present(value) => Ok(Some(value)),
            Field::Wrong(found) => Err(found),
        }
    }
}

/// A JSON object's top-level fields, each as JSON text borrowed from the input (one
/// pass: nothing below the top level is decoded), or `None` for any other JSON
/// value. For an object the module keeps a few parts of, or passes on verbatim.
#[derive(Debug, Default, Clone)]
pub struct RawFields<'a>(pub Option<Vec<(Cow<'a, str>, &'a RawValue)>>);

impl<'a> RawFields<'a> {
    /// The field `name` (the last one, should it repeat, as JSON parsers do).
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.as_ref()?.iter().rev().find(|(key, _)| key == name).map(|(_, value)| *value)
    }
}

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
/// deserializer stays in step) and read it as [`Lenient::other`]. `null` always
/// reads as the default (absent).
trait Lenient<'de>: Default {
    /// A value of another type than expected; `found` names its JSON type.
    fn other(_found: &'static str) -> Self {
        Self::default()
    }

    fn from_str(_: Cow<'de, str>) -> Self {
        Self::other("a string")
    }

    /// A string that had to be unescaped, lent for the call only; copied into
    /// [`Lenient::from_str`] unless the type needs no copy.
    fn from_str_ref(value: &str) -> Self {
        Self::from_str(Cow::Owned(value.to_owned()))
    }

    fn from_i64(_: i64) -> Self {
        Self::other("a number")
    }

    fn from_u64(_: u64) -> Self {
        Self::other("a number")
    }

    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Self::other("an array"))
    }

    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Self::other("an object"))
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
        Ok(T::from_str_ref(value))
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
        Ok(T::other("a number"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<T, E> {
        Ok(T::other("a boolean"))
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

impl<'de: 'a, 'a> Lenient<'de> for Field<Cow<'a, str>> {
    fn other(found: &'static str) -> Self {
        Field::Wrong(found)
    }

    fn from_str(value: Cow<'de, str>) -> Self {
        Field::Present(value)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<Cow<'a, str>> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_lenient(deserializer)
    }
}

impl Lenient<'_> for Field<i64> {
    fn other(found: &'static str) -> Self {
        Field::Wrong(found)
    }

    fn from_i64(value: i64) -> Self {
        Field::Present(value)
    }

    fn from_u64(value: u64) -> Self {
        i64::try_from(value).map_or(Field::Wrong("a number out of range"), Field::Present)
    }
}

impl<'de> Deserialize<'de> for Field<i64> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_lenient(deserializer)
    }
}

/// A [`Field`] holding a JSON object, decoded as `T` (a struct of lenient fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectField<T>(pub Field<T>);

impl<T> Default for ObjectField<T> {
    fn default() -> Self {
        ObjectField(Field::Absent)
    }
}

impl<'de, T: Deserialize<'de>> Lenient<'de> for ObjectField<T> {
    fn other(found: &'static str) -> Self {
        ObjectField(Field::Wrong(found))
    }

    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(|value| ObjectField(Field::Present(value)))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectField<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_lenient(deserializer)
    }
}

impl<'de: 'a, 'a> Lenient<'de> for RawFields<'a> {
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0).min(32));
        while let Some(key) = map.next_key::<Str<'de>>()? {
            let value: &'de RawValue = map.next_value()?;
            // JSON object keys are strings; `Str` only reads as absent for others.
            fields.push((key.present().unwrap_or_default(), value));
        }
        Ok(RawFields(Some(fields)))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawFields<'a> {
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

    /// Name, count, inner `n` and items, as a consumer reads them.
    type Seen = (Option<String>, Option<i64>, Option<Option<i64>>, Option<Vec<Option<i64>>>);

    /// What a consumer sees: each field's value when of the expected type.
    fn seen(sample: Sample<'_>) -> Seen {
        (
            sample.name.present().map(Cow::into_owned),
            sample.count.present(),
            sample.inner.0.map(|inner| inner.n.present()),
            sample.items.0.map(|items| items.into_iter().map(Field::present).collect()),
        )
    }

    #[test]
    fn expected_types_are_read() {
        let sample =
            read(r#"{"name":"a\"b","count":-3,"inner":{"n":4,"x":[1]},"items":[1,"2",3],"other":{}}"#);
        assert_eq!(
            seen(sample),
            (Some("a\"b".into()), Some(-3), Some(Some(4)), Some(vec![Some(1), None, Some(3)]))
        );
    }

    #[test]
    fn borrowed_when_unescaped() {
        let sample = read(r#"{"name":"plain"}"#);
        assert!(matches!(sample.name, Field::Present(Cow::Borrowed("plain"))));
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
            assert_eq!(seen(read(json)), (None, None, None, None), "{json}");
        }
        let sample = read(r#"{"name":[1,[2]],"count":9}"#);
        assert_eq!(sample.count, Field::Present(9), "a skipped value keeps the decoder in step");
    }

    #[test]
    fn fields_tell_absent_from_wrong() {
        #[derive(Debug, Default, Deserialize)]
        struct Checked<'a> {
            #[serde(borrow, default)]
            s: Field<Cow<'a, str>>,
            #[serde(default)]
            n: Field<i64>,
            #[serde(default)]
            o: ObjectField<Inner>,
        }
        let read = |json: &'static str| serde_json::from_str::<Checked<'_>>(json).expect("decodes");
        let present = read(r#"{"s":"x","n":-2,"o":{"n":1}}"#);
        assert_eq!(present.s, Field::Present(Cow::Borrowed("x")));
        assert_eq!(present.n, Field::Present(-2));
        assert_eq!(present.o.0, Field::Present(Inner { n: Field::Present(1) }));
        let absent = read(r#"{"s":null,"n":null}"#);
        assert_eq!((absent.s, absent.n, absent.o.0), (Field::Absent, Field::Absent, Field::Absent));
        let wrong = read(r#"{"s":[1],"n":"1","o":true}"#);
        assert_eq!((wrong.s.get(), wrong.n.get()), (Err("an array"), Err("a string")));
        assert_eq!(wrong.o.0.get(), Err("a boolean"));
        assert_eq!(read(r#"{"n":1.5}"#).n, Field::Wrong("a number"));
        assert_eq!(read(r#"{"n":18446744073709551615}"#).n, Field::Wrong("a number out of range"));
    }

    #[test]
    fn digests_read_escaped_and_plain_strings_alike() {
        let escaped: StrDigest = serde_json::from_str(r#""a\nb""#).expect("decodes");
        let plain: StrDigest = serde_json::from_str(r#""ab""#).expect("decodes");
        assert_eq!(escaped.0, Some(StrDigest::of("a\nb")));
        assert_eq!(plain.0, Some(StrDigest::of("ab")));
        assert_eq!(serde_json::from_str::<StrDigest>("[1]").expect("decodes").0, None);
    }

    #[test]
    fn raw_fields_keep_the_top_level_as_text() {
        let fields: RawFields<'_> =
            serde_json::from_str(r#"{"a":{"b":[1,"x"]},"c":"d","a":2}"#).expect("decodes");
        assert_eq!(fields.get("a").map(RawValue::get), Some("2"), "the last one wins");
        assert_eq!(fields.get("c").map(RawValue::get), Some(r#""d""#));
        assert!(fields.get("b").is_none());
        let list: RawFields<'_> = serde_json::from_str("[1]").expect("decodes");
        assert!(list.0.is_none() && list.get("a").is_none());
    }

    #[test]
    fn top_level_values_of_any_type_decode() {
        for json in ["1", "\"s\"", "null", "[1,2]", "true", "{}"] {
            let object: Object<Inner> = serde_json::from_str(json).expect("decodes");
            assert_eq!(object.0.is_some(), json == "{}", "{json}");
        }
    }
}
