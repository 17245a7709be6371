//! One walk over a parsed JSON document, for what PostgreSQL and our bounds refuse: text
//! cannot hold U+0000, and a document may nest at most so deep. Iterative, since the
//! documents come from clients. And JSON text without its insignificant whitespace.

use serde_json::Value;

/// What a walk found first, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Nested deeper than the bound.
    TooDeep,
    /// A key or a string holds U+0000; the path names it (`a.b[2]`, empty for the root).
    Nul { path: String },
}

enum Step<'a> {
    Field(&'a str),
    Index(usize),
}

/// The first problem of `document`, or `None`. The root is at depth 1.
pub fn scan(document: &Value, max_depth: usize) -> Option<Finding> {
    // Each visited value names its parent, so a path is built only for a finding.
    let mut trail: Vec<(usize, Step<'_>)> = Vec::new();
    let mut stack: Vec<(&Value, usize, Option<usize>)> = vec![(document, 1, None)];
    while let Some((value, depth, at)) = stack.pop() {
        if depth > max_depth {
            return Some(Finding::TooDeep);
        }
        match value {
            Value::String(s) if s.contains('\0') => {
                return Some(Finding::Nul {
                    path: path_of(&trail, at),
                });
            }
            Value::Array(items) => {
                // Pushed last-first, so the walk meets them in order.
                for (i, item) in items.iter().enumerate().rev() {
                    trail.push((at.map_or(usize::MAX, |p| p), Step::Index(i)));
                    stack.push((item, depth + 1, Some(trail.len() - 1)));
                }
            }
            Value::Object(map) => {
                let start = trail.len();
                for (key, _) in map.iter() {
                    trail.push((at.map_or(usize::MAX, |p| p), Step::Field(key)));
                }
                if let Some(offset) = map.keys().position(|key| key.contains('\0')) {
                    return Some(Finding::Nul {
                        path: path_of(&trail, Some(start + offset)),
                    });
                }
                for (offset, (_, item)) in map.iter().enumerate().rev() {
                    stack.push((item, depth + 1, Some(start + offset)));
                }
            }
            _ => {}
        }
    }
    None
}

fn path_of(trail: &[(usize, Step<'_>)], mut at: Option<usize>) -> String {
    let mut steps = Vec::new();
    while let Some(i) = at {
        let Some((parent, step)) = trail.get(i) else {
            break;
        };
        steps.push(step);
        at = (*parent != usize::MAX).then_some(*parent);
    }
    let mut path = String::new();
    for step in steps.into_iter().rev() {
        match step {
            Step::Field(key) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Step::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    path
}

/// `json` (JSON text, such as `jsonb` as PostgreSQL prints it) without the whitespace
/// between its tokens; strings are copied as they are. One pass, no parsing: what is not
/// JSON stays as wrong as it was.
pub fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut run = 0;
    for (i, b) in json.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            // Whitespace is ASCII, so `run..i` ends on a character boundary.
            out.push_str(&json[run..i]);
            run = i + 1;
        } else if b == b'"' {
            in_string = true;
        }
    }
    out.push_str(&json[run..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_first_nul_in_document_order() {
        let doc = json!({"a": "ok", "b": {"c": ["x", "y\u{0}"]}, "d": "\u{0}"});
        assert_eq!(
            scan(&doc, 32),
            Some(Finding::Nul {
                path: "b.c[1]".into()
            })
        );
        assert_eq!(
            scan(&json!({"k\u{0}": 1}), 32),
            Some(Finding::Nul {
                path: "k\u{0}".into()
            })
        );
        assert_eq!(
            scan(&json!("\u{0}"), 32),
            Some(Finding::Nul {
                path: String::new()
            })
        );
        assert_eq!(scan(&json!({"a": [1, {"b": "c"}]}), 32), None);
    }

    #[test]
    fn bounds_the_depth_without_recursing() {
        let mut doc = json!("leaf");
        for _ in 0..10_000 {
            doc = Value::Array(vec![doc]);
        }
        assert_eq!(scan(&doc, 32), Some(Finding::TooDeep));
        assert_eq!(scan(&json!([[1]]), 3), None);
        assert_eq!(scan(&json!([[[1]]]), 3), Some(Finding::TooDeep));
        // serde_json's drop of such a document recurses too; leak it in the test.
        std::mem::forget(doc);
    }

    #[test]
    fn compact_drops_whitespace_between_tokens_only() {
        assert_eq!(
            compact(r#"{"a b": [1, "x , y\" : z"], "c": {"d": null}}"#),
            r#"{"a b":[1,"x , y\" : z"],"c":{"d":null}}"#
        );
        assert_eq!(compact(" \t\n\r[ ]"), "[]");
        assert_eq!(compact(r#""\\" "#), r#""\\""#);
        assert_eq!(compact("{\"é\": \"ü ß\"}"), "{\"é\":\"ü ß\"}");
    }

    /// Values whose strings are full of what `compact` must leave alone inside them.
    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let text = "[ \\t\\n\\r\\\\\"a,:{}\\[\\]é]{0,12}";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text.prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(text, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Whatever serde_json prints, compacted, is what it prints compactly.
        #[test]
        fn compact_matches_serde_jsons_compact_form(value in json_value()) {
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            proptest::prop_assert_eq!(compact(&pretty), serde_json::to_string(&value).unwrap());
        }
    }
}
