//! Parsing only the fields some paths read: an index's upkeep needs a few fields of every
//! document it is handed, and building the whole document (every string, every nested
//! object) costs more than the entry made from it. Fields no path names are skipped as
//! they are read, never built.

use crate::Path;
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// The fields a set of paths read, as a tree: [`Pruner::parse`] builds a document holding
/// only them, on which [`Path::get`] gives what it gives on the whole document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pruner {
    root: Field,
}

/// A field on some path: kept whole (a path ends here) or only its named fields.
#[derive(Debug, Clone, Default, PartialEq)]
struct Field {
    whole: bool,
    fields: BTreeMap<String, Field>,
}

impl Pruner {
    /// The pruner of the fields `paths` read.
    pub fn new<'p>(paths: impl IntoIterator<Item = &'p Path>) -> Self {
        let mut root = Field::default();
        for path in paths {
            let mut here = &mut root;
            for name in &path.0 {
                here = here.fields.entry(name.clone()).or_default();
            }
            here.whole = true;
        }
        Self { root }
    }

    /// The document `text` holds with only the fields of the paths: each path reads in it
    /// what it reads in the whole document. Refuses what is not JSON.
    pub fn parse(&self, text: &str) -> Result<Value, serde_json::Error> {
        let mut reader = serde_json::Deserializer::from_str(text);
        let value = (&self.root).deserialize(&mut reader)?;
        reader.end()?;
        Ok(value)
    }
}

impl<'de> DeserializeSeed<'de> for &Field {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        if self.whole {
            return Value::deserialize(deserializer);
        }
        deserializer.deserialize_any(self)
    }
}

/// What stands in for a value no path reads into: paths through it find nothing, as
/// they find nothing in a scalar or an array.
const SKIPPED: Value = Value::Null;

impl<'de> Visitor<'de> for &Field {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(SKIPPED)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(SKIPPED)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(SKIPPED)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(SKIPPED)
    }

    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(SKIPPED)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(SKIPPED)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        while items.next_element::<IgnoredAny>()?.is_some() {}
        Ok(SKIPPED)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        while let Some(Name(name)) = map.next_key::<Name<'de>>()? {
            match self.fields.get(name.as_ref()) {
                // A name twice: the last one counts, as in the whole document.
                Some(field) => {
                    kept.insert(name.into_owned(), map.next_value_seed(field)?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }
}

/// A field's name, borrowed from the text when it has no escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(name)))
            }

            fn visit_str<E>(self, name: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(name.to_string())))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(|f| json!(f)),
            "[ab\"\\\\\u{e9}\u{0}]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[abc]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn path() -> impl Strategy<Value = Path> {
        proptest::collection::vec("[abc]", 1..4).prop_map(Path)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every path reads in the pruned document what it reads in the whole one.
        #[test]
        fn paths_read_the_same_in_the_pruned_document(
            document in value(),
            paths in proptest::collection::vec(path(), 1..4),
        ) {
            let text = document.to_string();
            let whole: Value = serde_json::from_str(&text).unwrap();
            let pruned = Pruner::new(&paths).parse(&text).unwrap();
            for path in &paths {
                prop_assert_eq!(path.get(&pruned), path.get(&whole), "{}", path.dotted());
            }
        }
    }

    #[test]
    fn a_name_twice_counts_once_its_last_value_and_junk_is_refused() {
        let paths = [Path::parse("a.b").unwrap(), Path::parse("c").unwrap()];
        let pruner = Pruner::new(&paths);
        let twice = r#"{"a": {"b": 1}, "c": [1], "a": 5, "c": {"x": 2}, "d": "skipped"}"#;
        let whole: Value = serde_json::from_str(twice).unwrap();
        let pruned = pruner.parse(twice).unwrap();
        for path in &paths {
            assert_eq!(path.get(&pruned), path.get(&whole));
        }
        assert_eq!(pruned, json!({"a": null, "c": {"x": 2}}));
        let escaped = r#"{"\u0061": {"b": "\u00e9"}}"#;
        assert_eq!(
            paths[0].get(&pruner.parse(escaped).unwrap()),
            Some(&json!("é"))
        );
        for junk in ["", "{", r#"{"a": }"#, "[1, 2", "{} {}", "nul"] {
            assert!(pruner.parse(junk).is_err(), "{junk:?}");
        }
    }
}
