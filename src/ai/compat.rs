//! `async-openai`'s answer types follow OpenAI to the letter: `created`, `object` and
//! `total_tokens` are required and `finish_reason` is a closed enum. OpenAI-compatible
//! servers are looser (OpenRouter answers `finish_reason: "error"`, Anthropic-style
//! gateways `end_turn`, small proxies omit `created`), so answers are patched into
//! OpenAI's shape before they are decoded, instead of failing the whole answer.

use serde_json::{Value, json};

use crate::ai::AiError;
use crate::ai::client::error_detail_from_value;

/// A chat answer or one stream chunk. `Err` when the provider reports a failure in it.
pub(crate) fn patch_chat(value: &mut Value) -> Result<(), AiError> {
    if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
        return Err(AiError::Upstream(error_detail_from_value(error)));
    }
    let Some(object) = value.as_object_mut() else {
        return Ok(());
    };
    for (key, default) in [
        ("id", json!("")),
        ("object", json!("")),
        ("created", json!(0)),
        ("model", json!("")),
        ("choices", json!([])),
    ] {
        match object.get(key) {
            Some(v) if !v.is_null() => {}
            _ => {
                object.insert(key.to_owned(), default);
            }
        }
    }
    if let Some(usage) = object.get_mut("usage") {
        patch_usage(usage);
    }
    if let Some(choices) = object.get_mut("choices").and_then(Value::as_array_mut) {
        for (i, choice) in choices.iter_mut().enumerate() {
            let Some(choice) = choice.as_object_mut() else {
                continue;
            };
            choice.entry("index").or_insert(json!(i));
            if let Some(reason) = choice.get_mut("finish_reason") {
                *reason = match reason.as_str() {
                    None => Value::Null,
                    Some("error") => {
                        return Err(AiError::Upstream("the model stopped with an error".into()));
                    }
                    Some(known) => json!(finish_reason(known)),
                };
            }
        }
    }
    Ok(())
}

/// An embeddings answer.
pub(crate) fn patch_embeddings(value: &mut Value) {
    let Some(object) = value.as_object_mut() else {
        return;
    };
    object.entry("object").or_insert(json!("list"));
    object.entry("model").or_insert(json!(""));
    let usage = object.entry("usage").or_insert(json!({"prompt_tokens": 0}));
    patch_usage(usage);
    if let Some(data) = object.get_mut("data").and_then(Value::as_array_mut) {
        for (i, item) in data.iter_mut().enumerate() {
            if let Some(item) = item.as_object_mut() {
                item.entry("object").or_insert(json!("embedding"));
                item.entry("index").or_insert(json!(i));
            }
        }
    }
}

fn patch_usage(usage: &mut Value) {
    let Some(usage) = usage.as_object_mut() else {
        *usage = Value::Null;
        return;
    };
    let count = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let prompt = count(usage.get("prompt_tokens"));
    let completion = count(usage.get("completion_tokens"));
    usage.insert("prompt_tokens".into(), json!(prompt));
    usage.insert("completion_tokens".into(), json!(completion));
    if count(usage.get("total_tokens")) == 0 {
        usage.insert("total_tokens".into(), json!(prompt + completion));
    }
}

/// OpenAI's names for the reasons other servers spell their own way.
fn finish_reason(reason: &str) -> &'static str {
    match reason.to_ascii_lowercase().as_str() {
        "length" | "max_tokens" | "max_output_tokens" => "length",
        "tool_calls" | "tool_use" | "function_call" => "tool_calls",
        "content_filter" | "safety" | "recitation" => "content_filter",
        // "stop", "eos", "end_turn", "stop_sequence" and whatever else a server invents:
        // the model ended its turn.
        _ => "stop",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_openai::types::chat::{CreateChatCompletionResponse, FinishReason};

    #[test]
    fn loose_answers_decode() {
        let mut value = json!({
            "model": "llama3",
            "choices": [{"message": {"role": "assistant", "content": "hi"},
                         "finish_reason": "end_turn"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        });
        patch_chat(&mut value).unwrap();
        let answer: CreateChatCompletionResponse = serde_json::from_value(value).unwrap();
        assert_eq!(answer.choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(answer.usage.unwrap().total_tokens, 4);
    }

    #[test]
    fn an_error_finish_is_an_error() {
        let mut value = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "error"}]});
        assert!(matches!(patch_chat(&mut value), Err(AiError::Upstream(_))));
        let mut value = json!({"error": {"message": "context too long"}});
        match patch_chat(&mut value) {
            Err(AiError::Upstream(detail)) => assert_eq!(detail, "context too long"),
            other => panic!("{other:?}"),
        }
    }
}
