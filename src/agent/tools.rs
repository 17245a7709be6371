//! The tools an agent's model may call (spec §13): `handoff_to_human {reason}` and
//! `create_task {text, due_in_hours}`. The model's arguments are checked here; running
//! them is the caller's (Kommo for a real conversation, nothing for the test chat).

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ai::{Tool, ToolCall};

pub const HANDOFF: &str = "handoff_to_human";
pub const CREATE_TASK: &str = "create_task";
const MAX_REASON_CHARS: usize = 500;
const MAX_TASK_CHARS: usize = 1000;
/// A task due further out than a month is not a follow-up.
const MAX_DUE_HOURS: u32 = 720;

pub fn definitions() -> Vec<Tool> {
    vec![
        Tool {
            name: HANDOFF.into(),
            description: "Hand the conversation to a person on the sales team: when the lead \
                          asks for a person, is upset, or asks something you cannot answer \
                          from the context. You will stop answering in this conversation."
                .into(),
            parameters: json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["reason"],
                "properties": {
                    "reason": {"type": "string", "description": "Why a person should take over, in one sentence."}
                },
            }),
        },
        Tool {
            name: CREATE_TASK.into(),
            description: "Create a follow-up task in the CRM for the lead's responsible \
                          manager (a call back, a quote to send, …)."
                .into(),
            parameters: json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["text", "due_in_hours"],
                "properties": {
                    "text": {"type": "string", "description": "What to do."},
                    "due_in_hours": {"type": "integer", "minimum": 1, "maximum": MAX_DUE_HOURS},
                },
            }),
        },
    ]
}

/// A tool call the model made, checked: what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "tool", rename_all = "snake_case")]
pub enum Intent {
    HandoffToHuman { reason: String },
    CreateTask { text: String, due_in_hours: u32 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HandoffArgs {
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskArgs {
    text: String,
    due_in_hours: u32,
}

fn clip(text: &str, max: usize) -> String {
    text.trim()
        .chars()
        .filter(|c| *c != '\0')
        .take(max)
        .collect()
}

/// The call's intent, or why it cannot be done (told back to the model).
pub fn parse(call: &ToolCall) -> Result<Intent, String> {
    match call.name.as_str() {
        HANDOFF => {
            let args: HandoffArgs = serde_json::from_str(&call.arguments)
                .map_err(|e| format!("invalid arguments: {e}"))?;
            let reason = clip(&args.reason, MAX_REASON_CHARS);
            Ok(Intent::HandoffToHuman {
                reason: if reason.is_empty() {
                    "the agent asked for a person".into()
                } else {
                    reason
                },
            })
        }
        CREATE_TASK => {
            let args: TaskArgs = serde_json::from_str(&call.arguments)
                .map_err(|e| format!("invalid arguments: {e}"))?;
            let text = clip(&args.text, MAX_TASK_CHARS);
            if text.is_empty() {
                return Err("`text` must not be empty".into());
            }
            if !(1..=MAX_DUE_HOURS).contains(&args.due_in_hours) {
                return Err(format!("`due_in_hours` must be 1 to {MAX_DUE_HOURS}"));
            }
            Ok(Intent::CreateTask {
                text,
                due_in_hours: args.due_in_hours,
            })
        }
        other => Err(format!("there is no tool `{other}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: "call_1".into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    #[test]
    fn calls_are_checked_before_anything_runs() {
        assert_eq!(
            parse(&call(HANDOFF, r#"{"reason":" wants a discount "}"#)),
            Ok(Intent::HandoffToHuman {
                reason: "wants a discount".into()
            })
        );
        assert_eq!(
            parse(&call(
                CREATE_TASK,
                r#"{"text":"Call back","due_in_hours":24}"#
            )),
            Ok(Intent::CreateTask {
                text: "Call back".into(),
                due_in_hours: 24
            })
        );
        assert!(parse(&call(CREATE_TASK, r#"{"text":"x","due_in_hours":0}"#)).is_err());
        assert!(parse(&call(CREATE_TASK, r#"{"text":"  ","due_in_hours":2}"#)).is_err());
        assert!(parse(&call(HANDOFF, "not json")).is_err());
        assert!(parse(&call("delete_everything", "{}")).is_err());
        assert_eq!(definitions().len(), 2);
    }
}
