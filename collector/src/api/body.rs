//! Request bodies as the OpenAPI document describes them: a JSON object (a struct is never read
//! from an array), with integers written as JSON Schema allows (`30855441.0` is an integer to
//! JSON Schema, so it is one here too). Every handler reads its body through [`object`].

use serde::de::DeserializeOwned;
use serde_json::{Number, Value};

use super::problem::{FieldError, Problem};

/// The body as a JSON object, integral numbers as integers; 400 naming `body` otherwise.
pub fn object(body: &[u8]) -> Result<Value, Problem> {
    let mut value: Value = serde_json::from_slice(body)
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
