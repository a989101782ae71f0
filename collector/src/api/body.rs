//! Request bodies as the OpenAPI document describes them: a JSON object (a struct is never read
//! from an array), with integers written as JSON Schema allows (`30855441.0` is an integer to
//! JSON Schema, so it is one here too), and no key twice in one object (which of two values
//! would count is anyone's guess). Every handler reads its body through [`object`].

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::problem::{FieldError, Problem};

/// The body as a JSON object, integral numbers as integers; 400 naming `body` otherwise.
pub fn object(body: &[u8]) -> Result<Value, Problem> {
    let Strict(mut value) = serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(vec![FieldError::new("body", format!("not JSON: {e}"))]))?;
    if !value.is_object() {
        return Err(Problem::bad_request(vec![FieldError::new("body", "must be a JSON object")]));
    }
    integers(&mut value);
    Ok(value)
}

/// The body read as `T`; `expected` says what the body should look like.
pub(super) fn typed<T: DeserializeOwned>(body: &[u8], expected: &str) -> Result<T, Problem> {
    serde_json::from_value(object(body)?)
        .map_err(|e| Problem::bad_request(vec![FieldError::new("body", format!("expected {expected}: {e}"))]))
}

/// Turns every number with no fractional part (within i64 / u64) into an integer.
fn integers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0) {
                // The casts saturate; a value outside the range is left as it was.
                let integer = if f < 0.0 {
                    Some(f as i64).filter(|i| *i as f64 == f).map(Number::from)
                } else {
                    Some(f as u64).filter(|u| *u as f64 == f).map(Number::from)
                };
                if let Some(integer) = integer {
                    *n = integer;
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integers),
        Value::Object(fields) => fields.values_mut().for_each(integers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_objects_and_integral_numbers_become_integers() {
        let v = object(br#"{"a": 30855441.0, "b": [2.0, -3.0, 1.5], "c": {"d": 1e3}, "e": 1e300}"#).unwrap();
        assert_eq!(v["a"].as_u64(), Some(30_855_441));
        assert_eq!((v["b"][0].as_u64(), v["b"][1].as_i64(), v["b"][2].as_f64()), (Some(2), Some(-3), Some(1.5)));
        assert_eq!(v["c"]["d"].as_u64(), Some(1000));
        assert!(v["e"].is_f64(), "out of range: left alone");
        for body in [&b"[null, null]"[..], b"3", b"\"x\"", b"null"] {
            let problem = object(body).unwrap_err();
            assert_eq!((problem.status, problem.errors[0].message.as_str()), (400, "must be a JSON object"));
        }
    }
}

/// A JSON value whose objects have each key once.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("the key {key:?} is given twice in one object")));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod strict_tests {
    use super::*;

    #[test]
    fn a_key_given_twice_is_refused_and_everything_else_reads_as_json() {
        let refused = object(br#"{"events": [{"id": "a", "id": "b"}]}"#).unwrap_err();
        assert!(refused.errors[0].message.contains(r#"the key "id" is given twice"#), "{refused:?}");
        let read = object(br#"{"a": [1, -2, 3.5, 4.0, "x", null, true, {"b": {}}]}"#).unwrap();
        assert_eq!(read, serde_json::json!({"a": [1, -2, 3.5, 4, "x", null, true, {"b": {}}]}));
    }
}
