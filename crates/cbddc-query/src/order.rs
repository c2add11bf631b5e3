//! One total order across JSON values, for comparisons and sorting: a missing field, then
//! `null`, `false`, `true`, numbers (by value), strings (by Unicode code point, as
//! bytes of UTF-8 compare), arrays (element by element, then by length) and objects
//! (field by field in the order their keys sort, each by key then value, then by size).

use serde_json::Value;
use std::cmp::Ordering;

fn rank(value: Option<&Value>) -> u8 {
    match value {
        None => 0,
        Some(Value::Null) => 1,
        Some(Value::Bool(false)) => 2,
        Some(Value::Bool(true)) => 3,
        Some(Value::Number(_)) => 4,
        Some(Value::String(_)) => 5,
        Some(Value::Array(_)) => 6,
        Some(Value::Object(_)) => 7,
    }
}

fn numbers(a: &serde_json::Number, b: &serde_json::Number) -> Ordering {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => match (a.as_u64(), b.as_u64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => {
                let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
                x.total_cmp(&y)
            }
        },
    }
}

/// Compares two values, either possibly missing, in the documented order.
pub fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match rank(a).cmp(&rank(b)) {
        Ordering::Equal => {}
        other => return other,
    }
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => numbers(x, y),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Array(x)), Some(Value::Array(y))) => x
            .iter()
            .zip(y)
            .map(|(p, q)| compare(Some(p), Some(q)))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let mut xs: Vec<_> = x.iter().collect();
            let mut ys: Vec<_> = y.iter().collect();
            xs.sort_by(|p, q| p.0.cmp(q.0));
            ys.sort_by(|p, q| p.0.cmp(q.0));
            xs.iter()
                .zip(&ys)
                .map(|(p, q)| p.0.cmp(q.0).then_with(|| compare(Some(p.1), Some(q.1))))
                .find(|o| o.is_ne())
                .unwrap_or_else(|| xs.len().cmp(&ys.len()))
        }
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_order_before_values() {
        let ordered = [
            None,
            Some(json!(null)),
            Some(json!(false)),
            Some(json!(true)),
            Some(json!(-2)),
            Some(json!(1.5)),
            Some(json!(10)),
            Some(json!("")),
            Some(json!("a")),
            Some(json!("b")),
            Some(json!([])),
            Some(json!([1])),
            Some(json!([1, 2])),
            Some(json!([2])),
            Some(json!({})),
            Some(json!({"a": 1})),
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(compare(a.as_ref(), b.as_ref()), i.cmp(&j), "{a:?} vs {b:?}");
            }
        }
        assert_eq!(compare(Some(&json!(2)), Some(&json!(2.0))), Ordering::Equal);
    }
}
