//! The knowledge graph as the model is asked for it and as we accept it: the JSON schema
//! of an answer, the prompt that tags each chunk of a batch with its index, and the
//! validation that turns an answer into facts ready to write — or refuses it whole, so a
//! batch is never written half-way. Names are normalised here (what merges two mentions
//! of one entity) and duplicates within an answer are merged, because one upsert
//! statement cannot touch the same row twice.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::EntityType;

/// The `response_format.json_schema.name` of a graph request.
pub const SCHEMA_NAME: &str = "knowledge_graph";
/// The table's bounds (`knowledge_entities.name`, `….description`, `knowledge_relationships.type`).
pub const NAME_MAX_CHARS: usize = 200;
pub const DESCRIPTION_MAX_CHARS: usize = 2000;
pub const RELATION_TYPE_MAX_CHARS: usize = 100;
/// More than this from one batch of ~8 chunks is a model running away, not extraction.
pub const MAX_ENTITIES: usize = 100;
pub const MAX_RELATIONSHIPS: usize = 200;
/// An answer longer than this is refused unread.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

pub const SYSTEM_PROMPT: &str = "You extract a knowledge graph from passages of an \
organization's documents. List the entities the passages state facts about (people, \
organizations, products, services, locations, events, concepts, prices, policies; `other` \
when none fits), each once, with its name as written and a one- or two-sentence description \
drawn only from the passages. List the relationships between those entities that the \
passages state, with `source` and `target` spelled exactly like names in your entity list \
and a short snake_case `type` such as `sells`, `located_in` or `costs`. For every entity and \
relationship give the indexes of the passages it comes from in `chunks`. Do not invent \
facts. At most 100 entities and 200 relationships. Answer with JSON only.";

/// The user turn: every chunk of the batch under `[chunk N]`, N its index in `chunks`.
pub fn user_prompt<S: AsRef<str>>(chunks: &[S]) -> String {
    let mut prompt = String::from("Passages:\n");
    for (index, chunk) in chunks.iter().enumerate() {
        prompt.push_str(&format!("\n[chunk {index}]\n{}\n", chunk.as_ref().trim()));
    }
    prompt
}

/// The answer's schema, in the subset strict structured output accepts: every property
/// required, no additional ones (an optional description is `string | null`).
pub fn schema() -> Value {
    let types: Vec<&str> = EntityType::ALL.iter().map(|t| t.as_str()).collect();
    let chunks = json!({"type": "array", "items": {"type": "integer"}});
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["entities", "relationships"],
        "properties": {
            "entities": {"type": "array", "items": {
                "type": "object",
                "additionalProperties": false,
                "required": ["name", "type", "description", "chunks"],
                "properties": {
                    "name": {"type": "string"},
                    "type": {"type": "string", "enum": types},
                    "description": {"type": "string"},
                    "chunks": chunks,
                },
            }},
            "relationships": {"type": "array", "items": {
                "type": "object",
                "additionalProperties": false,
                "required": ["source", "target", "type", "description", "chunks"],
                "properties": {
                    "source": {"type": "string"},
                    "target": {"type": "string"},
                    "type": {"type": "string"},
                    "description": {"type": ["string", "null"]},
                    "chunks": chunks,
                },
            }},
        },
    })
}

/// Why an answer was refused; the words go into the retry prompt and the job's result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAnswer(pub String);

fn invalid(message: impl Into<String>) -> InvalidAnswer {
    InvalidAnswer(message.into())
}

// The wire shape. Unknown fields are refused: a model that adds some did not follow the
// schema and may have misread the rest too. `description` and `chunks` may be missing
// or null (models outside strict mode drop them); a fact without chunks is taken to
// come from the whole batch.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnswer {
    entities: Vec<RawEntity>,
    relationships: Vec<RawRelationship>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntity {
    name: String,
    #[serde(rename = "type")]
    kind: EntityType,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    chunks: Option<Vec<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelationship {
    source: String,
    target: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    chunks: Option<Vec<u32>>,
}

/// An entity as it will be upserted: `(normalized_name, kind)` is its key in the org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    /// The first spelling seen, whitespace collapsed.
    pub name: String,
    pub normalized_name: String,
    pub kind: EntityType,
    pub description: String,
    /// Indexes into the batch's chunks, sorted, never empty.
    pub chunks: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relationship {
    /// Indexes into `Graph::entities`.
    pub source: usize,
    pub target: usize,
    /// Normalised (`snake_case`), so `Works for` and `WORKS_FOR` are one edge.
    pub kind: String,
    pub description: String,
    pub chunks: Vec<usize>,
}

/// One batch's facts, valid and with no duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    pub entities: Vec<Entity>,
    pub relationships: Vec<Relationship>,
}

/// Parses and checks a model's answer for a batch of `chunk_count` chunks: all of it is
/// accepted or none (the first problem is named).
pub fn parse(answer: &str, chunk_count: usize) -> Result<Graph, InvalidAnswer> {
    if answer.len() > MAX_ANSWER_BYTES {
        return Err(invalid(format!(
            "the answer is longer than {MAX_ANSWER_BYTES} bytes"
        )));
    }
    let raw: RawAnswer = serde_json::from_str(strip_code_fence(answer))
        .map_err(|e| invalid(format!("the answer does not match the schema: {e}")))?;
    if raw.entities.len() > MAX_ENTITIES {
        return Err(invalid(format!(
            "{} entities; at most {MAX_ENTITIES} are accepted",
            raw.entities.len()
        )));
    }
    if raw.relationships.len() > MAX_RELATIONSHIPS {
        return Err(invalid(format!(
            "{} relationships; at most {MAX_RELATIONSHIPS} are accepted",
            raw.relationships.len()
        )));
    }
    let all_chunks: Vec<usize> = (0..chunk_count).collect();
    let chunk_list = |chunks: Option<Vec<u32>>, what: &str| -> Result<Vec<usize>, InvalidAnswer> {
        let mut list: Vec<usize> = chunks
            .unwrap_or_default()
            .into_iter()
            .map(|c| c as usize)
            .collect();
        if let Some(bad) = list.iter().find(|c| **c >= chunk_count) {
            return Err(invalid(format!(
                "{what} names chunk {bad}; the passages are numbered 0 to {}",
                chunk_count.saturating_sub(1)
            )));
        }
        list.sort_unstable();
        list.dedup();
        Ok(if list.is_empty() {
            all_chunks.clone()
        } else {
            list
        })
    };

    let mut graph = Graph::default();
    let mut by_key: HashMap<(String, EntityType), usize> = HashMap::new();
    // A relationship names its ends by name only; with one name under two types (Apple
    // the company and the fruit) the first listed wins.
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for (i, raw) in raw.entities.into_iter().enumerate() {
        let what = format!("entity {i}");
        let name = clean_name(&raw.name);
        let chars = name.chars().count();
        if chars == 0 || chars > NAME_MAX_CHARS {
            return Err(invalid(format!(
                "{what} has a name of {chars} characters; 1 to {NAME_MAX_CHARS} are accepted"
            )));
        }
        let normalized_name = normalize_name(&name);
        if normalized_name.is_empty() {
            return Err(invalid(format!("{what} has a name of punctuation only")));
        }
        let description = clean_description(raw.description.as_deref().unwrap_or(""));
        let chunks = chunk_list(raw.chunks, &what)?;
        let key = (normalized_name.clone(), raw.kind);
        match by_key.get(&key) {
            Some(&at) => {
                let entity = &mut graph.entities[at];
                entity.description = merge_descriptions(&entity.description, &description);
                entity.chunks = union(&entity.chunks, &chunks);
            }
            None => {
                by_key.insert(key, graph.entities.len());
                by_name
                    .entry(normalized_name.clone())
                    .or_insert(graph.entities.len());
                graph.entities.push(Entity {
                    name,
                    normalized_name,
                    kind: raw.kind,
                    description,
                    chunks,
                });
            }
        }
    }

    let mut by_edge: HashMap<(usize, usize, String), usize> = HashMap::new();
    for (i, raw) in raw.relationships.into_iter().enumerate() {
        let what = format!("relationship {i}");
        let end = |name: &str, role: &str| {
            by_name.get(&normalize_name(name)).copied().ok_or_else(|| {
                let shown: String = name.chars().take(80).collect();
                invalid(format!(
                    "{what} names `{shown}` as its {role}, which is not in the entity list"
                ))
            })
        };
        let source = end(&raw.source, "source")?;
        let target = end(&raw.target, "target")?;
        let kind = normalize_relation_type(&raw.kind);
        let chars = kind.chars().count();
        if chars == 0 || chars > RELATION_TYPE_MAX_CHARS {
            return Err(invalid(format!(
                "{what} has a type of {chars} characters; 1 to {RELATION_TYPE_MAX_CHARS} are accepted"
            )));
        }
        let description = clean_description(raw.description.as_deref().unwrap_or(""));
        let chunks = chunk_list(raw.chunks, &what)?;
        // An entity related to itself says nothing a reader could use.
        if source == target {
            continue;
        }
        let key = (source, target, kind.clone());
        match by_edge.get(&key) {
            Some(&at) => {
                let edge = &mut graph.relationships[at];
                edge.description = merge_descriptions(&edge.description, &description);
                edge.chunks = union(&edge.chunks, &chunks);
            }
            None => {
                by_edge.insert(key, graph.relationships.len());
                graph.relationships.push(Relationship {
                    source,
                    target,
                    kind,
                    description,
                    chunks,
                });
            }
        }
    }
    Ok(graph)
}

/// Some models wrap JSON in a Markdown fence even when asked not to.
fn strip_code_fence(answer: &str) -> &str {
    let trimmed = answer.trim();
    let Some(inner) = trimmed.strip_prefix("```") else {
        return trimmed;
    };
    let inner = inner.strip_prefix("json").unwrap_or(inner);
    inner.strip_suffix("```").unwrap_or(inner).trim()
}

/// Characters trimmed from both ends of a name before comparing: punctuation that
/// wraps or ends a mention ("Acme Corp.", «Ромашка», (Berlin)), but not the `+` or `#`
/// that belong to names like C++ or C#.
fn is_wrapping_punctuation(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '.' | ','
                | ';'
                | ':'
                | '!'
                | '?'
                | '"'
                | '\''
                | '`'
                | '('
                | ')'
                | '['
                | ']'
                | '{'
                | '}'
                | '<'
                | '>'
                | '*'
                | '_'
                | '-'
                | '«'
                | '»'
                | '“'
                | '”'
                | '„'
                | '‘'
                | '’'
                | '‹'
                | '›'
                | '…'
                | '–'
                | '—'
                | '·'
                | '•'
        )
}

/// What merges two mentions of one entity: Unicode lower case (`ё` read as `е`, as
/// Russian writers mostly do), whitespace collapsed to one space, wrapping punctuation
/// trimmed.
pub fn normalize_name(name: &str) -> String {
    let lower = name.to_lowercase().replace('ё', "е");
    let trimmed = lower.trim_matches(is_wrapping_punctuation);
    trimmed.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A name as shown: as written, with control characters dropped and whitespace collapsed.
fn clean_name(name: &str) -> String {
    name.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `Works for` and `WORKS_FOR` are one type: lower case, words joined by `_`.
pub fn normalize_relation_type(kind: &str) -> String {
    kind.to_lowercase()
        .split(|c: char| c.is_whitespace() || c.is_control() || c == '-' || c == '_')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

/// Trimmed, NUL-free (PostgreSQL text cannot hold it) and cut to the column's bound:
/// a long description is still worth its first 2000 characters.
fn clean_description(description: &str) -> String {
    description
        .trim()
        .chars()
        .filter(|c| *c != '\0')
        .take(DESCRIPTION_MAX_CHARS)
        .collect::<String>()
        .trim_end()
        .to_owned()
}

/// Two descriptions of one fact: the one that says more when one contains the other,
/// both when they fit together, else the first (what was known first stays). The same
/// rule merges a batch's description into the stored one (`db::graph::upsert_entities`),
/// so a rerun adds nothing it already said.
pub fn merge_descriptions(first: &str, second: &str) -> String {
    if second.is_empty() || first.contains(second) {
        return first.to_owned();
    }
    if first.is_empty() || second.contains(first) {
        return second.to_owned();
    }
    if first.chars().count() + 1 + second.chars().count() <= DESCRIPTION_MAX_CHARS {
        return format!("{first} {second}");
    }
    first.to_owned()
}

fn union(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut all: Vec<usize> = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(value: Value) -> String {
        value.to_string()
    }

    #[test]
    fn names_normalise_across_case_spacing_punctuation_and_scripts() {
        assert_eq!(normalize_name("  Acme   Corp. "), "acme corp");
        assert_eq!(normalize_name("ACME\tcorp"), "acme corp");
        assert_eq!(normalize_name("«ООО  Ромашка»"), "ооо ромашка");
        assert_eq!(normalize_name("Алёна Петрова"), "алена петрова");
        assert_eq!(normalize_name("C++"), "c++");
        assert_eq!(normalize_name("C#."), "c#");
        assert_eq!(normalize_name("$100"), "$100");
        assert_eq!(normalize_name("..."), "");
        assert_eq!(normalize_relation_type(" Works  for"), "works_for");
        assert_eq!(normalize_relation_type("WORKS_FOR"), "works_for");
        assert_eq!(normalize_relation_type("located-in"), "located_in");
    }

    #[test]
    fn a_valid_answer_becomes_merged_facts() {
        let graph = parse(
            &answer(json!({
                "entities": [
                    {"name": "Acme  Corp", "type": "organization", "description": "Makes pumps.", "chunks": [1]},
                    {"name": "Rocket Pump", "type": "product", "description": "A pump.", "chunks": [0, 1]},
                    {"name": "acme corp.", "type": "organization", "description": "Based in Berlin.", "chunks": [0]},
                ],
                "relationships": [
                    {"source": "ACME corp", "target": "rocket pump", "type": "Makes", "description": null, "chunks": []},
                    {"source": "Acme Corp", "target": "Rocket Pump", "type": "makes", "description": "Since 1990.", "chunks": [1]},
                    {"source": "Acme Corp", "target": "acme corp", "type": "is", "description": "", "chunks": [0]},
                ],
            })),
            2,
        )
        .expect("valid");
        assert_eq!(graph.entities.len(), 2);
        let acme = &graph.entities[0];
        assert_eq!(acme.name, "Acme Corp");
        assert_eq!(acme.normalized_name, "acme corp");
        assert_eq!(acme.description, "Makes pumps. Based in Berlin.");
        assert_eq!(acme.chunks, vec![0, 1]);
        // Two mentions of one edge are one; the self-loop is dropped; no chunks means
        // the whole batch.
        assert_eq!(
            graph.relationships,
            vec![Relationship {
                source: 0,
                target: 1,
                kind: "makes".into(),
                description: "Since 1990.".into(),
                chunks: vec![0, 1],
            }]
        );
    }

    #[test]
    fn one_name_under_two_types_is_two_entities() {
        let graph = parse(
            &answer(json!({"entities": [
                {"name": "Apple", "type": "organization", "description": "", "chunks": [0]},
                {"name": "apple", "type": "product", "description": "", "chunks": [0]},
            ], "relationships": []})),
            1,
        )
        .expect("valid");
        assert_eq!(graph.entities.len(), 2);
    }

    #[test]
    fn long_descriptions_are_cut_and_nul_dropped() {
        let long = "x".repeat(DESCRIPTION_MAX_CHARS + 50);
        let graph = parse(
            &answer(json!({"entities": [
                {"name": "A\u{0}cme", "type": "other", "description": format!("a\u{0}{long}"), "chunks": [0]},
            ], "relationships": []})),
            1,
        )
        .expect("valid");
        assert_eq!(graph.entities[0].name, "A cme");
        assert_eq!(
            graph.entities[0].description.chars().count(),
            DESCRIPTION_MAX_CHARS
        );
        assert!(!graph.entities[0].description.contains('\0'));
    }

    #[test]
    fn invalid_answers_are_refused_whole() {
        let entity = |name: &str, kind: &str| json!({"name": name, "type": kind, "description": "", "chunks": [0]});
        let cases = [
            ("not json".to_owned(), "schema"),
            (answer(json!({"entities": []})), "schema"),
            (
                answer(json!({"entities": [entity("Acme", "company")], "relationships": []})),
                "unknown variant",
            ),
            (
                answer(json!({"entities": [entity("", "other")], "relationships": []})),
                "0 characters",
            ),
            (
                answer(
                    json!({"entities": [entity(&"n".repeat(201), "other")], "relationships": []}),
                ),
                "201 characters",
            ),
            (
                answer(json!({"entities": [entity("?!", "other")], "relationships": []})),
                "punctuation",
            ),
            (
                answer(
                    json!({"entities": [{"name": "A", "type": "other", "description": "", "chunks": [3]}], "relationships": []}),
                ),
                "chunk 3",
            ),
            (
                answer(
                    json!({"entities": [entity("A", "other")], "relationships": [
                    {"source": "A", "target": "Nobody", "type": "knows", "description": null, "chunks": [0]}]}),
                ),
                "`Nobody` as its target",
            ),
            (
                answer(
                    json!({"entities": [entity("A", "other"), entity("B", "other")], "relationships": [
                    {"source": "A", "target": "B", "type": " _ ", "description": null, "chunks": [0]}]}),
                ),
                "type of 0",
            ),
            (
                answer(
                    json!({"entities": [entity("A", "other")], "relationships": [], "extra": 1}),
                ),
                "unknown field",
            ),
            (
                answer(
                    json!({"entities": vec![entity("A", "other"); MAX_ENTITIES + 1], "relationships": []}),
                ),
                "at most",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(&text, 1).expect_err(&text);
            assert!(error.0.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn fenced_json_is_read() {
        let graph =
            parse("```json\n{\"entities\": [], \"relationships\": []}\n```", 1).expect("valid");
        assert!(graph.entities.is_empty());
    }

    #[test]
    fn descriptions_merge_without_repeating() {
        assert_eq!(merge_descriptions("", "b"), "b");
        assert_eq!(merge_descriptions("a", ""), "a");
        assert_eq!(merge_descriptions("Makes pumps.", "pumps"), "Makes pumps.");
        assert_eq!(merge_descriptions("pumps", "Makes pumps."), "Makes pumps.");
        assert_eq!(merge_descriptions("A.", "B."), "A. B.");
        let full = "x".repeat(DESCRIPTION_MAX_CHARS);
        assert_eq!(merge_descriptions(&full, "more"), full);
    }

    #[test]
    fn the_schema_lists_every_type_and_requires_every_property() {
        let schema = schema();
        let entity = &schema["properties"]["entities"]["items"];
        assert_eq!(
            entity["properties"]["type"]["enum"]
                .as_array()
                .map(Vec::len),
            Some(10)
        );
        for item in [entity, &schema["properties"]["relationships"]["items"]] {
            let required = item["required"].as_array().map(Vec::len);
            assert_eq!(required, item["properties"].as_object().map(|p| p.len()));
            assert_eq!(item["additionalProperties"], false);
        }
    }

    #[test]
    fn the_prompt_numbers_the_chunks() {
        let prompt = user_prompt(&["first", " second "]);
        assert!(prompt.contains("[chunk 0]\nfirst\n"), "{prompt}");
        assert!(prompt.contains("[chunk 1]\nsecond\n"), "{prompt}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            // Any text as an answer: facts or a refusal, never a panic.
            #[test]
            fn any_answer_is_facts_or_refused(text in "\\PC{0,400}", chunks in 0usize..10) {
                let _ = parse(&text, chunks);
            }

            // Normalising twice changes nothing, and the result never has wrapping space.
            #[test]
            fn normalisation_is_idempotent(name in "\\PC{0,60}") {
                let once = normalize_name(&name);
                prop_assert_eq!(normalize_name(&once), once.clone());
                prop_assert_eq!(once.trim(), once.as_str());
            }
        }
    }
}
