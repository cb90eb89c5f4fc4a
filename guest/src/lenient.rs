//! Lenient decoding of the objects the host observed: a field of an unexpected JSON
//! type reads as absent instead of failing the whole snapshot, so an odd field never
//! hides the rest of an object (a Percona cluster with a strange status is still
//! known to exist, and is never created again).
//!
//! The structs are derived; their fields say how each is read, with
//! `#[serde(default, deserialize_with = ...)]`: [`value`] for strings and numbers,
//! [`object`] for a nested struct of such fields, [`list`] for an array of those.
//! Everything else is skipped without being built, in the snapshot's single pass.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{BorrowedStrDeserializer, Error, MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{
    self, Deserialize, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

/// A JSON object read as `T` (a struct of lenient fields, so that any object reads),
/// or `None` for any other JSON value.
#[derive(Debug)]
pub struct Object<T>(pub Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Expect::<T>::new(Container::Object)).map(Object)
    }
}

/// A string or number read as `T`; `None` for `null` and values of another type.
pub fn value<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    deserializer.deserialize_any(Expect::new(Container::None))
}

/// A JSON object read as `T` ([`Object`]); `T::default()` for any other value.
pub fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Object::deserialize(deserializer).map(|object| object.0.unwrap_or_default())
}

/// An array of JSON objects, each read as `T` ([`Object`], `T::default()` for an item
/// of another type); empty for any other value.
pub fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    let items: Option<Vec<Object<T>>> = deserializer.deserialize_any(Expect::new(Container::Array))?;
    Ok(items.into_iter().flatten().map(|item| item.0.unwrap_or_default()).collect())
}

/// The JSON container `T` is read from, if any. Scalars are always offered to `T`
/// (a type that rejects them has read nothing); a container is handed to `T` only
/// when `T` is one, since a type that fails halfway through a container would leave
/// the decoder out of step. Other containers are skipped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Container {
    None,
    Object,
    Array,
}

struct Expect<T> {
    container: Container,
    expected: PhantomData<T>,
}

impl<T> Expect<T> {
    fn new(container: Container) -> Self {
        Expect { container, expected: PhantomData }
    }
}

/// `T` read from a scalar, or `None` when it is not of `T`'s type.
fn scalar<'de, T: Deserialize<'de>>(value: impl Deserializer<'de, Error = Error>) -> Option<T> {
    T::deserialize(value).ok()
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Expect<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Option<T>, E> {
        Ok(scalar(value.into_deserializer()))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Option<T>, E> {
        Ok(scalar(value.into_deserializer()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Option<T>, E> {
        Ok(scalar(value.into_deserializer()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Option<T>, E> {
        Ok(scalar(value.into_deserializer()))
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Option<T>, E> {
        Ok(scalar(BorrowedStrDeserializer::new(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Option<T>, E> {
        Ok(scalar(value.into_deserializer()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        if self.container == Container::Object {
            return T::deserialize(MapAccessDeserializer::new(map)).map(Some);
        }
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
        if self.container == Container::Array {
            return T::deserialize(SeqAccessDeserializer::new(seq)).map(Some);
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Sample {
        #[serde(default, deserialize_with = "value")]
        name: Option<String>,
        #[serde(default, deserialize_with = "value")]
        count: Option<i64>,
        #[serde(default, deserialize_with = "value")]
        flag: Option<bool>,
        #[serde(default, deserialize_with = "object")]
        inner: Inner,
        #[serde(default, deserialize_with = "list")]
        items: Vec<Inner>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Inner {
        #[serde(default, deserialize_with = "value")]
        n: Option<i64>,
    }

    fn read(json: &str) -> Sample {
        serde_json::from_str::<Sample>(json).expect("any JSON object decodes")
    }

    fn inner(n: i64) -> Inner {
        Inner { n: Some(n) }
    }

    #[test]
    fn expected_types_are_read() {
        let sample = read(
            r#"{"name":"a\"b","count":-3,"flag":true,"inner":{"n":4,"x":[1]},"items":[{"n":1},"2",{"n":3}],"other":{}}"#,
        );
        assert_eq!(
            sample,
            Sample {
                name: Some("a\"b".into()),
                count: Some(-3),
                flag: Some(true),
                inner: inner(4),
                items: vec![inner(1), Inner::default(), inner(3)],
            }
        );
        assert_eq!(read(r#"{"name":"plain"}"#).name.as_deref(), Some("plain"));
    }

    #[test]
    fn other_types_read_as_absent_and_the_rest_still_decodes() {
        let odd = [
            r#"{"name":5,"count":"x","flag":1,"inner":[1,{"a":2}],"items":{"a":[1]},"tail":1}"#,
            r#"{"name":{"a":{"b":[]}},"count":1.5,"flag":"true","inner":"s","items":null}"#,
            r#"{"name":null,"count":18446744073709551615,"flag":[],"inner":true,"items":"[]"}"#,
            r#"{"name":[],"count":{},"flag":{},"inner":null,"items":7}"#,
        ];
        for json in odd {
            assert_eq!(read(json), Sample::default(), "{json}");
        }
        let sample = read(r#"{"name":[1,[2]],"inner":{"n":{"m":[3]}},"count":9}"#);
        assert_eq!(sample.count, Some(9), "a skipped value keeps the decoder in step");
        assert_eq!(sample.inner, Inner::default());
    }

    #[test]
    fn escaped_and_plain_strings_read_alike() {
        assert_eq!(read(r#"{"name":"a\nb"}"#).name.as_deref(), Some("a\nb"));
        assert_eq!(read(r#"{"name":"h\u0041"}"#).name.as_deref(), Some("hA"));
    }

    #[test]
    fn top_level_values_of_any_type_decode() {
        for json in ["1", "\"s\"", "null", "[1,2]", "[{}]", "true", "{}"] {
            let object: Object<Inner> = serde_json::from_str(json).expect("decodes");
            assert_eq!(object.0.is_some(), json == "{}", "{json}");
        }
    }
}
