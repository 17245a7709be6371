//! Incremental reading of a streamed chat answer: server-sent-event framing, then the
//! OpenAI chunk protocol (text deltas, tool calls in pieces, usage in the last chunk).
//! Both parts are pure and work on whatever byte pieces the network delivers, so memory
//! stays bounded by one line, never by the whole answer.

use std::collections::{BTreeMap, VecDeque};

use async_openai::types::chat::CreateChatCompletionStreamResponse;
use serde_json::Value;

use crate::ai::compat::patch_chat;
use crate::ai::{AiError, FinishReason, StreamEvent, ToolCall, Usage};

/// The longest line (or one event's data, or one tool call's arguments) we hold. A real
/// chunk is a few hundred bytes; anything near this is a broken or hostile peer.
pub(crate) const MAX_LINE: usize = 1024 * 1024;

/// Splits bytes into SSE events and returns each event's `data` (RFC: lines ending in LF
/// or CRLF, `:` comments, an empty line ends an event).
#[derive(Default)]
pub(crate) struct SseDecoder {
    line: Vec<u8>,
    data: String,
    has_data: bool,
}

impl SseDecoder {
    pub(crate) fn push(&mut self, mut bytes: &[u8], out: &mut Vec<String>) -> Result<(), AiError> {
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
            let (head, rest) = bytes.split_at(pos);
            bytes = &rest[1..];
            if self.line.is_empty() {
                self.line_done(head, out)?;
            } else {
                self.extend_line(head)?;
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, out)?;
            }
        }
        self.extend_line(bytes)
    }

    /// The body ended: a last line without its newline and an event without its blank
    /// line still count (some servers close right after the last `data:`).
    pub(crate) fn finish(&mut self, out: &mut Vec<String>) -> Result<(), AiError> {
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            self.line_done(&line, out)?;
        }
        self.dispatch(out);
        Ok(())
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), AiError> {
        if self.line.len() + bytes.len() > MAX_LINE {
            return Err(AiError::Decode("stream line over 1 MiB".into()));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<String>) -> Result<(), AiError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        let line = std::str::from_utf8(line)
            .map_err(|_| AiError::Decode("stream line is not UTF-8".into()))?;
        if line.starts_with(':') {
            // A comment: keep-alives such as OpenRouter's ": OPENROUTER PROCESSING".
            return Ok(());
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        if field != "data" {
            return Ok(());
        }
        let value = value.strip_prefix(' ').unwrap_or(value);
        if self.data.len() + value.len() + 1 > MAX_LINE {
            return Err(AiError::Decode("stream event over 1 MiB".into()));
        }
        if self.has_data {
            self.data.push('\n');
        }
        self.data.push_str(value);
        self.has_data = true;
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<String>) {
        if self.has_data {
            out.push(std::mem::take(&mut self.data));
            self.has_data = false;
        }
    }
}

#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Turns chunk payloads into [`StreamEvent`]s.
#[derive(Default)]
pub(crate) struct ChatAssembler {
    calls: BTreeMap<u32, PartialCall>,
    usage: Usage,
    finish_reason: Option<FinishReason>,
    done: bool,
}

impl ChatAssembler {
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// One event's data.
    pub(crate) fn event(
        &mut self,
        data: &str,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<(), AiError> {
        if self.done {
            return Ok(());
        }
        if data.trim() == "[DONE]" {
            return self.complete(out);
        }
        let mut value: Value = serde_json::from_str(data)
            .map_err(|e| AiError::Decode(format!("stream chunk: {e}")))?;
        // Failures after the 200 come as a chunk with `error` (OpenRouter, vLLM).
        patch_chat(&mut value)?;
        let chunk: CreateChatCompletionStreamResponse = serde_json::from_value(value)
            .map_err(|e| AiError::Decode(format!("stream chunk: {e}")))?;
        if let Some(usage) = &chunk.usage {
            self.usage = usage.into();
        }
        // We never ask for more than one choice.
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                out.push_back(StreamEvent::Delta(text));
            }
            for piece in choice.delta.tool_calls.unwrap_or_default() {
                let call = self.calls.entry(piece.index).or_default();
                if let Some(id) = piece.id.filter(|id| !id.is_empty()) {
                    call.id = id;
                }
                if let Some(function) = piece.function {
                    // Some servers repeat the name in every piece; only the first counts.
                    if let Some(name) = function.name.filter(|_| call.name.is_empty()) {
                        call.name = name;
                    }
                    if let Some(arguments) = function.arguments {
                        if call.arguments.len() + arguments.len() > MAX_LINE {
                            return Err(AiError::Decode("tool call arguments over 1 MiB".into()));
                        }
                        call.arguments.push_str(&arguments);
                    }
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason.into());
                // Pieces of a call may interleave with other calls', so a call is only
                // known complete once the choice has finished.
                self.flush_calls(out)?;
            }
        }
        Ok(())
    }

    /// The body ended. Without `[DONE]`, an answer that had finished still counts; one
    /// that had not is an error rather than a silently truncated reply.
    pub(crate) fn end(&mut self, out: &mut VecDeque<StreamEvent>) -> Result<(), AiError> {
        if self.done {
            return Ok(());
        }
        if self.finish_reason.is_some() {
            return self.complete(out);
        }
        Err(AiError::Transport(
            "the stream ended before the answer was complete".into(),
        ))
    }

    fn complete(&mut self, out: &mut VecDeque<StreamEvent>) -> Result<(), AiError> {
        self.flush_calls(out)?;
        self.done = true;
        out.push_back(StreamEvent::Done {
            usage: self.usage,
            finish_reason: self.finish_reason,
        });
        Ok(())
    }

    fn flush_calls(&mut self, out: &mut VecDeque<StreamEvent>) -> Result<(), AiError> {
        for (index, call) in std::mem::take(&mut self.calls) {
            if call.name.is_empty() {
                return Err(AiError::Decode("streamed tool call without a name".into()));
            }
            out.push_back(StreamEvent::ToolCall(ToolCall {
                id: if call.id.is_empty() {
                    format!("call_{index}")
                } else {
                    call.id
                },
                name: call.name,
                arguments: call.arguments,
            }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(pieces: &[&[u8]]) -> Result<Vec<String>, AiError> {
        let mut decoder = SseDecoder::default();
        let mut out = Vec::new();
        for piece in pieces {
            decoder.push(piece, &mut out)?;
        }
        decoder.finish(&mut out)?;
        Ok(out)
    }

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let body =
            "data: {\"a\":1}\n\n: keep-alive\r\n\r\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n";
        let whole = decode_all(&[body.as_bytes()]).unwrap();
        assert_eq!(whole, vec!["{\"a\":1}", "line1\nline2", "[DONE]"]);
        // Byte by byte: the same events, multi-byte characters included.
        let text = "data: привет\n\n";
        let bytes: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
        assert_eq!(decode_all(&bytes).unwrap(), vec!["привет"]);
    }

    #[test]
    fn a_last_event_without_blank_line_counts() {
        assert_eq!(decode_all(&[b"data: x"]).unwrap(), vec!["x"]);
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut decoder = SseDecoder::default();
        let mut out = Vec::new();
        let piece = vec![b'a'; 64 * 1024];
        let mut result = Ok(());
        for _ in 0..20 {
            result = decoder.push(&piece, &mut out);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(AiError::Decode(_))));
    }

    fn chunk(delta: Value, finish: Option<&str>) -> String {
        serde_json::json!({
            "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
        .to_string()
    }

    #[test]
    fn tool_calls_are_assembled_from_pieces() {
        let mut assembler = ChatAssembler::default();
        let mut out = VecDeque::new();
        let events = [
            chunk(
                serde_json::json!({"role": "assistant", "content": null}),
                None,
            ),
            chunk(
                serde_json::json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                    "function": {"name": "handoff_to_human", "arguments": ""}}]}),
                None,
            ),
            chunk(
                serde_json::json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"reason\":"}}]}),
                None,
            ),
            chunk(
                serde_json::json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"asks\"}"}}]}),
                None,
            ),
            chunk(serde_json::json!({}), Some("tool_calls")),
            serde_json::json!({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                "model": "m", "choices": [],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
            .to_string(),
            "[DONE]".to_string(),
        ];
        for event in &events {
            assembler.event(event, &mut out).unwrap();
        }
        let out: Vec<_> = out.into_iter().collect();
        assert_eq!(
            out,
            vec![
                StreamEvent::ToolCall(ToolCall {
                    id: "call_a".into(),
                    name: "handoff_to_human".into(),
                    arguments: "{\"reason\":\"asks\"}".into(),
                }),
                StreamEvent::Done {
                    usage: Usage {
                        prompt_tokens: 5,
                        completion_tokens: 3
                    },
                    finish_reason: Some(FinishReason::ToolCalls),
                },
            ]
        );
    }

    #[test]
    fn an_error_chunk_and_a_cut_stream_are_errors() {
        let mut assembler = ChatAssembler::default();
        let mut out = VecDeque::new();
        assembler
            .event(&chunk(serde_json::json!({"content": "Hi"}), None), &mut out)
            .unwrap();
        assert!(matches!(
            assembler.end(&mut out),
            Err(AiError::Transport(_))
        ));
        let error = r#"{"error": {"message": "upstream overloaded", "code": 502}}"#;
        match assembler.event(error, &mut out) {
            Err(AiError::Upstream(detail)) => assert_eq!(detail, "upstream overloaded"),
            other => panic!("{other:?}"),
        }
    }
}
