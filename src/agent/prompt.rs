//! The prompt of an agent's answer (spec §13): its instructions, what the org's knowledge
//! says about the latest messages, the lead's known facts and the recent history, within
//! a token budget. The same prompt serves a real conversation and the test chat.
//!
//! Tokens are estimated (about four characters a token for Latin text, fewer for
//! Cyrillic), which errs long: the budget is a ceiling, not a fill line.

use serde::Serialize;
use serde_json::Value;

use crate::ai::Message;
use crate::db::knowledge::SearchHit;

/// Tokens for the knowledge passages, the history and the lead's facts.
pub const KNOWLEDGE_TOKENS: usize = 2500;
pub const HISTORY_TOKENS: usize = 1500;
pub const LEAD_TOKENS: usize = 300;
/// Passages searched for per answer.
pub const KNOWLEDGE_HITS: i64 = 5;
/// Messages of history read before the budget trims them.
pub const HISTORY_MESSAGES: i64 = 20;

const RULES: &str = "You answer a lead (a prospective customer) in a chat, on behalf of the \
company. Answer in the language of the lead's last message, briefly and helpfully. Take facts \
about the company, its products, prices and policies only from the context below; when it \
does not hold the answer, say that you will check, and do not invent. Call handoff_to_human \
when the lead asks for a person or you cannot help. Call create_task when a manager must \
follow up.";

/// A rough token count: bytes / 4 undercounts Cyrillic (two bytes a letter), characters /
/// 3 over-counts English; the larger of the two errs long for both.
pub fn estimate_tokens(text: &str) -> usize {
    (text.len() / 4).max(text.chars().count() / 3) + 1
}

/// One turn of the conversation as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub from_lead: bool,
    pub text: String,
}

/// A passage the answer may draw on, kept on the outbound message as its source.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Source {
    pub chunk_id: uuid::Uuid,
    pub asset_id: uuid::Uuid,
    pub filename: String,
    pub score: f64,
    /// The page of a PDF, the heading of a section, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading: Option<String>,
}

pub struct Prompt<'a> {
    pub agent_name: &'a str,
    pub instructions: &'a str,
    pub knowledge: &'a [SearchHit],
    /// `name: value` lines about the lead.
    pub lead_facts: &'a [(String, String)],
    /// Earlier turns, oldest first; the last ones are kept when the budget is short.
    pub history: &'a [Turn],
    /// The messages being answered, oldest first.
    pub latest: &'a [Turn],
}

/// What went into the prompt: the messages, and the passages that fit (the sources).
pub struct Built {
    pub messages: Vec<Message>,
    pub sources: Vec<Source>,
}

pub fn build(prompt: &Prompt<'_>) -> Built {
    let mut system = String::new();
    let instructions = prompt.instructions.trim();
    if !instructions.is_empty() {
        system.push_str(instructions);
        system.push_str("\n\n");
    }
    system.push_str(&format!("Your name is {}. {RULES}", prompt.agent_name));

    let mut facts = String::new();
    let mut used = 0;
    for (name, value) in prompt.lead_facts {
        let line = format!("- {name}: {value}\n");
        used += estimate_tokens(&line);
        if used > LEAD_TOKENS {
            break;
        }
        facts.push_str(&line);
    }
    if !facts.is_empty() {
        system.push_str("\n\nWhat is known about the lead:\n");
        system.push_str(&facts);
    }

    // The context comes last, passage text first, so a model (and our fake) that quotes
    // its context quotes the document.
    let mut sources = Vec::new();
    let mut context = String::new();
    let mut used = 0;
    for hit in prompt.knowledge {
        let passage = hit.content.trim();
        let cost = estimate_tokens(passage) + 10;
        if used + cost > KNOWLEDGE_TOKENS {
            continue;
        }
        used += cost;
        context.push_str(passage);
        context.push_str(&format!("\n(source: {})\n\n", hit.filename));
        sources.push(source_of(hit));
    }
    system.push_str("\n\nContext:\n");
    if context.is_empty() {
        system.push_str("(nothing in the company's documents matches these messages)\n");
    } else {
        system.push_str(&context);
    }

    let mut messages = vec![Message::system(system)];
    let mut kept = Vec::new();
    let mut used = 0;
    for turn in prompt.history.iter().rev() {
        used += estimate_tokens(&turn.text);
        if used > HISTORY_TOKENS {
            break;
        }
        kept.push(turn);
    }
    for turn in kept.into_iter().rev().chain(prompt.latest.iter()) {
        messages.push(if turn.from_lead {
            Message::user(turn.text.clone())
        } else {
            Message::assistant(turn.text.clone())
        });
    }
    Built { messages, sources }
}

fn source_of(hit: &SearchHit) -> Source {
    let meta = |key: &str| hit.metadata.get(key);
    Source {
        chunk_id: hit.chunk_id,
        asset_id: hit.asset_id,
        filename: hit.filename.clone(),
        score: hit.score,
        page: meta("page").and_then(Value::as_i64),
        heading: meta("heading").and_then(Value::as_str).map(str::to_owned),
    }
}

/// The lead's facts worth telling the model, from Kommo's lead as stored.
pub fn lead_facts(lead: Option<&Value>) -> Vec<(String, String)> {
    let Some(lead) = lead else {
        return Vec::new();
    };
    let mut facts = Vec::new();
    if let Some(name) = lead
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        facts.push(("deal".to_owned(), name.to_owned()));
    }
    if let Some(price) = lead.get("price").and_then(Value::as_i64).filter(|p| *p > 0) {
        facts.push(("budget".to_owned(), price.to_string()));
    }
    for field in lead
        .get("custom_fields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(name), Some(value)) = (
            field.get("name").and_then(Value::as_str),
            field.get("value").and_then(Value::as_str),
        ) {
            facts.push((
                name.chars().take(100).collect(),
                value.chars().take(300).collect(),
            ));
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    fn hit(text: &str) -> SearchHit {
        SearchHit {
            chunk_id: Uuid::now_v7(),
            asset_id: Uuid::now_v7(),
            filename: "prices.pdf".into(),
            content: text.into(),
            score: 0.5,
            metadata: json!({"page": 3}),
        }
    }

    #[test]
    fn the_prompt_holds_instructions_facts_context_and_turns_in_budget() {
        let knowledge = vec![hit("Delivery costs 5 EUR."), hit(&"x".repeat(20_000))];
        let history: Vec<Turn> = (0..100)
            .map(|i| Turn {
                from_lead: i % 2 == 0,
                text: format!("earlier message {i} {}", "word ".repeat(40)),
            })
            .collect();
        let latest = vec![Turn {
            from_lead: true,
            text: "How much is delivery?".into(),
        }];
        let facts = lead_facts(Some(&json!({
            "name": "Big order", "price": 1200,
            "custom_fields": [{"name": "City", "value": "Berlin"}],
        })));
        let built = build(&Prompt {
            agent_name: "Anna",
            instructions: "Sell pumps.",
            knowledge: &knowledge,
            lead_facts: &facts,
            history: &history,
            latest: &latest,
        });
        let system = match &built.messages[0] {
            m if m.role == crate::ai::Role::System => m.content.clone(),
            other => panic!("{other:?}"),
        };
        assert!(system.starts_with("Sell pumps."));
        assert!(system.contains("- City: Berlin"));
        assert!(system.contains("- budget: 1200"));
        let context = &system[system.find("Context:").unwrap()..];
        assert!(context.contains("Delivery costs 5 EUR."));
        // The oversized passage does not fit and is not a source.
        assert_eq!(built.sources.len(), 1);
        assert_eq!(built.sources[0].page, Some(3));
        // The latest message is last; history was trimmed from the oldest end.
        assert_eq!(
            built.messages.last().map(|m| m.content.as_str()),
            Some("How much is delivery?")
        );
        let history_tokens: usize = built.messages[1..built.messages.len() - 1]
            .iter()
            .map(|m| estimate_tokens(&m.content))
            .sum();
        assert!(history_tokens <= HISTORY_TOKENS);
        assert!(built.messages.len() > 5);
        assert!(built.messages[1].content.contains("earlier message"));
        assert!(!built.messages[1].content.contains("earlier message 0 "));
    }
}
