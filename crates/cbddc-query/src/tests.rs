use super::*;
use proptest::prelude::*;
use serde_json::json;

fn query(selector: &str) -> Query {
    Query::parse(selector, &[], 100).unwrap()
}

#[test]
fn operators_on_dotted_paths() {
    let doc = json!({"status": "open", "n": 3, "addr": {"city": "P"}, "tags": ["a"], "none": null});
    for (selector, expected) in [
        (r#"{"status": "open"}"#, true),
        (r#"{"addr.city": "P"}"#, true),
        (r#"{"addr": {"city": "P"}}"#, true),
        (r#"{"n": {"$gt": 2, "$lt": 4}}"#, true),
        (r#"{"n": {"$gte": 4}}"#, false),
        (r#"{"n": {"$in": [1, 3]}}"#, true),
        (r#"{"n": {"$nin": [1, 3]}}"#, false),
        (r#"{"missing": {"$exists": false}}"#, true),
        (r#"{"none": {"$exists": true}}"#, true),
        (r#"{"none": null}"#, true),
        (r#"{"missing": null}"#, false),
        (r#"{"missing": {"$ne": 1}}"#, true),
        (r#"{"missing": {"$gt": 1}}"#, false),
        (r#"{"n": {"$not": {"$gt": 2}}}"#, false),
        (r#"{"$or": [{"n": 1}, {"status": "open"}]}"#, true),
        (r#"{"$and": [{"n": 3}, {"status": "closed"}]}"#, false),
        (r#"{"$not": {"n": 3}}"#, false),
        (r#"{"tags": ["a"]}"#, true),
        (r#"{"status": {"$gt": 100}}"#, true),
        (r#"{}"#, true),
    ] {
        assert_eq!(query(selector).matches(&doc), expected, "{selector}");
    }
}

#[test]
fn bad_queries_are_refused_naming_the_part() {
    let refused = |selector: &str| Query::parse(selector, &[], 10).unwrap_err().to_string();
    assert!(refused("[1]").contains("not an object"));
    assert!(refused("{").contains("JSON object"));
    assert!(refused(r#"{"n": {"$regex": "x"}}"#).contains("unknown operator $regex at n"));
    assert!(refused(r#"{"$nor": []}"#).contains("unknown operator $nor"));
    assert!(refused(r#"{"n": {"$in": 3}}"#).contains("$in at n takes an array"));
    assert!(refused(r#"{"n": {"$exists": 1}}"#).contains("true or false"));
    assert!(refused(r#"{"a..b": 1}"#).contains("\"a..b\""));
    let many = (0..300)
        .map(|i| format!("\"f{i}\": 1"))
        .collect::<Vec<_>>()
        .join(",");
    assert!(refused(&format!("{{{many}}}")).contains("more than"));
    assert!(Query::parse("{}", &[], 0).is_err());
    assert!(Query::parse("{}", &[], MAX_LIMIT + 1).is_err());
    assert!(Sort::parse("a:sideways").is_err());
    assert!(Sort::parse(":desc").is_err());
}

#[test]
fn a_cursor_resumes_only_its_own_query_and_refuses_tampering() {
    let sort = [Sort::parse("n:desc").unwrap()];
    let q = Query::parse(r#"{"s": "x"}"#, &sort, 2).unwrap();
    let position = q.position("k1", &json!({"n": 5}));
    let cursor = q.cursor(&position);
    assert_eq!(q.resume(&cursor).unwrap(), position);
    let other = Query::parse(r#"{"s": "y"}"#, &sort, 2).unwrap();
    assert!(
        other
            .resume(&cursor)
            .unwrap_err()
            .to_string()
            .contains("another query")
    );
    let mut tampered = cursor.clone().into_bytes();
    tampered[3] = if tampered[3] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(
        q.resume(&tampered)
            .unwrap_err()
            .to_string()
            .contains("altered")
    );
    assert!(q.resume("zz").is_err());
}

/// A random document of a few fields of mixed types, some missing.
fn document() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..5).prop_map(Value::from),
        "[a-c]{0,2}".prop_map(Value::from),
    ];
    (
        proptest::option::of(scalar.clone()),
        proptest::option::of(scalar.clone()),
        proptest::option::of(scalar),
    )
        .prop_map(|(a, b, c)| {
            let mut doc = serde_json::Map::new();
            if let Some(a) = a {
                doc.insert("a".into(), a);
            }
            if let Some(b) = b {
                doc.insert("nested".into(), json!({"b": b}));
            }
            if let Some(c) = c {
                doc.insert("c".into(), c);
            }
            Value::Object(doc)
        })
}

/// A random condition: a path, an operator, how two combine, an operand.
fn condition() -> impl Strategy<Value = (String, String, u8, Value)> {
    let operand = prop_oneof![
        Just(Value::Null),
        (-5i64..5).prop_map(Value::from),
        "[a-c]{0,2}".prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
    ];
    (
        prop_oneof![Just("a"), Just("nested.b"), Just("c")],
        prop_oneof![
            Just("$eq"),
            Just("$ne"),
            Just("$gt"),
            Just("$gte"),
            Just("$lt"),
            Just("$lte"),
            Just("$exists")
        ],
        0u8..3,
        operand,
    )
        .prop_map(|(path, op, combine, operand)| {
            (path.to_string(), op.to_string(), combine, operand)
        })
}

/// What the test expects of one condition, computed without the crate's evaluator: the
/// documented order written out by hand for the types generated here.
fn expected(field: Option<&Value>, op: &str, operand: &Value) -> bool {
    fn rank(v: Option<&Value>) -> (u8, i64, String) {
        match v {
            None => (0, 0, String::new()),
            Some(Value::Null) => (1, 0, String::new()),
            Some(Value::Bool(false)) => (2, 0, String::new()),
            Some(Value::Bool(true)) => (3, 0, String::new()),
            Some(Value::Number(n)) => (4, n.as_i64().unwrap(), String::new()),
            Some(Value::String(s)) => (5, 0, s.clone()),
            _ => unreachable!(),
        }
    }
    let (f, o) = (rank(field), rank(Some(operand)));
    match op {
        "$eq" => f == o,
        "$ne" => f != o,
        "$gt" => field.is_some() && f > o,
        "$gte" => field.is_some() && f >= o,
        "$lt" => field.is_some() && f < o,
        "$lte" => field.is_some() && f <= o,
        "$exists" => field.is_some() == operand.as_bool().unwrap_or(true),
        _ => unreachable!(),
    }
}

fn get<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, p| v.as_object()?.get(p))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Random selectors of two conditions (and, or, and-not) on random documents: the
    /// query matches exactly what the conditions, evaluated apart, say.
    #[test]
    fn a_query_matches_exactly_what_its_conditions_say(
        docs in proptest::collection::vec(document(), 1..30),
        first in condition(),
        second in condition(),
    ) {
        let operand = |op: &str, v: &Value| if op == "$exists" { json!(v.as_bool().unwrap_or(true)) } else { v.clone() };
        let (p1, o1, combine, v1) = first;
        let (p2, o2, _, v2) = second;
        let (v1, v2) = (operand(&o1, &v1), operand(&o2, &v2));
        let c1 = json!({ p1.clone(): { o1.clone(): v1.clone() } });
        let c2 = json!({ p2.clone(): { o2.clone(): v2.clone() } });
        let selector = match combine {
            0 => json!({"$and": [c1, c2]}),
            1 => json!({"$or": [c1, c2]}),
            _ => json!({"$and": [c1, {"$not": c2}]}),
        };
        let q = Query::parse(&selector.to_string(), &[], 10).unwrap();
        // Sorted by another path: the pruned document places it as the whole one does.
        let sorted = Query::parse(&selector.to_string(), &[Sort::parse("c:desc").unwrap()], 10).unwrap();
        let pruner = sorted.pruner([]);
        for doc in &docs {
            let a = expected(get(doc, &p1), &o1, &v1);
            let b = expected(get(doc, &p2), &o2, &v2);
            let want = match combine { 0 => a && b, 1 => a || b, _ => a && !b };
            prop_assert_eq!(q.matches(doc), want, "{} on {}", selector, doc);
            let pruned = pruner.parse(&doc.to_string()).unwrap();
            prop_assert_eq!(sorted.matches(&pruned), want, "{} on pruned {}", selector, pruned);
            prop_assert_eq!(sorted.position("k", &pruned), sorted.position("k", doc));
        }
    }

    /// Paging with cursors while documents change between pages: every document that did
    /// not change is seen exactly once (one that changed may move past the cursor and be
    /// seen again, or move before it and not be).
    #[test]
    fn pages_skip_and_repeat_nothing_that_did_not_change(
        docs in proptest::collection::vec(document(), 1..60),
        changes in proptest::collection::vec((0usize..60, document()), 0..20),
        limit in 1usize..7,
        descending in any::<bool>(),
    ) {
        let sort = [Sort { path: Path::parse("a").unwrap(), descending }];
        let q = Query::parse(r#"{"c": {"$ne": "zz"}}"#, &sort, limit).unwrap();
        let mut store: std::collections::BTreeMap<String, Value> =
            docs.into_iter().enumerate().map(|(i, d)| (format!("k{i:02}"), d)).collect();
        let mut changed = std::collections::BTreeSet::new();
        let mut seen: Vec<String> = Vec::new();
        let mut after = None;
        let mut pending = changes.into_iter();
        for _ in 0..200 {
            let mut page = Page::new(&q, after.clone());
            for (k, v) in &store {
                page.offer(k, v, k.clone());
            }
            let (results, next) = page.finish();
            seen.extend(results);
            // Between pages, a document changes.
            if let Some((i, doc)) = pending.next() {
                let key = format!("k{:02}", i % 60);
                store.insert(key.clone(), doc);
                changed.insert(key);
            }
            match next {
                Some(cursor) => after = Some(q.resume(&cursor).unwrap()),
                None => break,
            }
        }
        if changed.is_empty() {
            // Nothing changed: the pages together are the whole result, in order.
            let mut all: Vec<(Position, String)> = store
                .iter()
                .filter(|(_, v)| q.matches(v))
                .map(|(k, v)| (q.position(k, v), k.clone()))
                .collect();
            all.sort_by(|x, y| q.compare(&x.0, &y.0));
            let keys: Vec<String> = all.into_iter().map(|(_, k)| k).collect();
            prop_assert_eq!(&seen, &keys);
        }
        let unchanged: Vec<&String> = store.keys().filter(|k| !changed.contains(*k)).collect();
        for key in unchanged {
            let count = seen.iter().filter(|s| *s == key).count();
            prop_assert_eq!(count, 1, "{} seen {} times in {:?}", key, count, seen);
        }
    }
}
