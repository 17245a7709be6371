//! The AI client against the fake provider: shapes, retries, permanent errors, timeouts,
//! streaming, tool calls and JSON schema answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::fake_ai::{Answer, FakeAi};
use agents_api::ai::{
    AiClient, AiError, ChatRequest, FinishReason, Message, NoGate, Provider, StreamEvent, Tool,
};
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;

const KEY: &str = "sk-fake-SECRET-key";

fn provider(fake: &FakeAi, dimensions: u32) -> Provider {
    Provider {
        base_url: url::Url::parse(&fake.base_url()).unwrap(),
        api_key: Some(SecretString::from(KEY)),
        chat_model: "gpt-4o-mini".into(),
        embedding_model: "text-embedding-3-small".into(),
        dimensions,
        public_only: false,
    }
}

fn client(timeout: Duration) -> AiClient {
    AiClient::new(timeout, Arc::new(NoGate))
        .unwrap()
        .with_retries(4, Duration::from_millis(20))
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![
            Message::system("You are a sales agent."),
            Message::user(text),
        ],
        ..Default::default()
    }
}

fn tools() -> Vec<Tool> {
    vec![Tool {
        name: "handoff_to_human".into(),
        description: "Hand the conversation to a person".into(),
        parameters: json!({"type": "object", "properties": {"reason": {"type": "string"}},
                           "required": ["reason"]}),
    }]
}

#[tokio::test]
async fn embeddings_come_in_order_with_the_asked_dimensions() {
    let fake = FakeAi::start().await;
    let p = provider(&fake, 64);
    let inputs = vec!["доставка по Москве".to_owned(), "refund policy".to_owned()];
    let out = client(Duration::from_secs(5))
        .embed(Uuid::nil(), &p, &inputs)
        .await
        .unwrap();
    assert_eq!(out.vectors.len(), 2);
    assert!(out.vectors.iter().all(|v| v.len() == 64));
    assert_eq!(out.vectors[0], FakeAi::embedding_of(&inputs[0], 64));
    assert_eq!(out.usage.prompt_tokens, 5);
    let call = &fake.embedding_calls()[0];
    assert_eq!(call.body["dimensions"], 64);
    assert_eq!(
        call.authorization.as_deref(),
        Some(&*format!("Bearer {KEY}"))
    );

    // A model of another size is a permanent configuration error.
    fake.set_wrong_dimensions(Some(32));
    let error = client(Duration::from_secs(5))
        .embed(Uuid::nil(), &p, &inputs)
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        AiError::WrongDimensions {
            expected: 64,
            got: 32
        }
    ));
    assert!(error.is_permanent());
}

#[tokio::test]
async fn dimensions_are_sent_only_to_v3_models() {
    let fake = FakeAi::start().await;
    let mut p = provider(&fake, 1536);
    p.embedding_model = "nomic-embed-text".into();
    p.api_key = None;
    client(Duration::from_secs(5))
        .embed(Uuid::nil(), &p, &["x".to_owned()])
        .await
        .unwrap();
    let call = &fake.embedding_calls()[0];
    assert!(call.body.get("dimensions").is_none());
    assert_eq!(call.authorization, None);
}

#[tokio::test]
async fn a_500_is_retried_until_success() {
    let fake = FakeAi::start().await;
    fake.fail_next(2, 500, None);
    let answer = client(Duration::from_secs(5))
        .chat(Uuid::nil(), &provider(&fake, 8), &ask("hello"))
        .await
        .unwrap();
    assert_eq!(answer.content.as_deref(), Some("You said: hello"));
    assert_eq!(fake.chat_calls().len(), 3);
}

#[tokio::test]
async fn a_429_waits_for_retry_after() {
    let fake = FakeAi::start().await;
    fake.fail_next(1, 429, Some(1));
    let started = Instant::now();
    client(Duration::from_secs(5))
        .chat(Uuid::nil(), &provider(&fake, 8), &ask("hello"))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(950));
    assert_eq!(fake.chat_calls().len(), 2);
}

#[tokio::test]
async fn a_long_retry_after_gives_up_at_once_with_rate_limited() {
    let fake = FakeAi::start().await;
    fake.fail_next(1, 429, Some(3600));
    let error = client(Duration::from_secs(5))
        .chat(Uuid::nil(), &provider(&fake, 8), &ask("hello"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, AiError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(3600))
    );
    assert_eq!(fake.chat_calls().len(), 1);
}

#[tokio::test]
async fn a_401_is_permanent_and_not_retried() {
    let fake = FakeAi::start().await;
    fake.require_api_key(Some("another-key"));
    let error = client(Duration::from_secs(5))
        .chat(Uuid::nil(), &provider(&fake, 8), &ask("hello"))
        .await
        .unwrap_err();
    match &error {
        AiError::Status { status, detail } => {
            assert_eq!(*status, 401);
            assert_eq!(detail, "Incorrect API key provided");
        }
        other => panic!("{other:?}"),
    }
    assert!(error.is_permanent());
    assert!(!format!("{error:?} {error}").contains("SECRET"));
    assert_eq!(fake.chat_calls().len(), 1);
}

#[tokio::test]
async fn a_hanging_provider_times_out() {
    let fake = FakeAi::start().await;
    fake.hang_next(10);
    let error = client(Duration::from_millis(200))
        .with_retries(2, Duration::from_millis(10))
        .chat(Uuid::nil(), &provider(&fake, 8), &ask("hello"))
        .await
        .unwrap_err();
    assert!(matches!(error, AiError::Timeout), "{error:?}");
    assert!(!error.is_permanent());
    assert_eq!(fake.chat_calls().len(), 2);
}

#[tokio::test]
async fn scripted_tool_calls_and_json_answers_parse() {
    let fake = FakeAi::start().await;
    let p = provider(&fake, 8);
    fake.push_answer(Answer::ToolCall {
        name: "handoff_to_human".into(),
        arguments: json!({"reason": "wants a person"}),
    });
    let mut request = ask("hello");
    request.tools = tools();
    let answer = client(Duration::from_secs(5))
        .chat(Uuid::nil(), &p, &request)
        .await
        .unwrap();
    assert_eq!(answer.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(answer.tool_calls[0].name, "handoff_to_human");
    let args: Value = serde_json::from_str(&answer.tool_calls[0].arguments).unwrap();
    assert_eq!(args["reason"], "wants a person");
    let sent = &fake.chat_calls()[0].body;
    assert_eq!(sent["tools"][0]["type"], "function");
    assert_eq!(sent["tools"][0]["function"]["name"], "handoff_to_human");

    // The model sees its own call and the result on the next turn.
    request
        .messages
        .push(Message::assistant_tool_calls(answer.tool_calls.clone()));
    request
        .messages
        .push(Message::tool_result(&answer.tool_calls[0].id, "done"));
    client(Duration::from_secs(5))
        .chat(Uuid::nil(), &p, &request)
        .await
        .unwrap();
    let sent = &fake.chat_calls()[1].body;
    assert_eq!(sent["messages"][2]["tool_calls"][0]["id"], "call_fake_0");
    assert_eq!(sent["messages"][2]["content"], Value::Null);
    assert_eq!(sent["messages"][3]["tool_call_id"], "call_fake_0");

    let schema = json!({"type": "object", "additionalProperties": false,
        "required": ["entities"],
        "properties": {"entities": {"type": "array", "items": {"type": "object",
            "properties": {"name": {"type": "string"},
                           "type": {"type": "string", "enum": ["company", "person"]}}}}}});
    let request = ChatRequest {
        json_schema: Some(("graph".into(), schema)),
        ..ask("Acme Corp sells pumps")
    };
    let answer = client(Duration::from_secs(5))
        .chat(Uuid::nil(), &p, &request)
        .await
        .unwrap();
    let value: Value = serde_json::from_str(answer.content.as_deref().unwrap()).unwrap();
    assert_eq!(value["entities"][0]["type"], "company");
    let sent = &fake.chat_calls()[2].body;
    assert_eq!(sent["response_format"]["type"], "json_schema");
    assert_eq!(sent["response_format"]["json_schema"]["strict"], true);
    assert_eq!(sent["response_format"]["json_schema"]["name"], "graph");
}

#[tokio::test]
async fn streamed_deltas_arrive_before_the_answer_ends() {
    let fake = FakeAi::start().await;
    fake.set_chunk_delay(Duration::from_millis(50));
    let text = "one two three four five six seven eight";
    fake.push_answer(Answer::Text(text.into()));
    let mut stream = client(Duration::from_secs(5))
        .chat_stream(Uuid::nil(), &provider(&fake, 8), &ask("count"))
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first, StreamEvent::Delta("one ".into()));
    // The fake is still writing: the first word came before the last.
    assert_eq!(fake.stream_counts().1, 0);
    let mut joined = match first {
        StreamEvent::Delta(t) => t,
        _ => unreachable!(),
    };
    let mut done = None;
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            StreamEvent::Delta(t) => joined.push_str(&t),
            StreamEvent::Done {
                usage,
                finish_reason,
            } => done = Some((usage, finish_reason)),
            StreamEvent::ToolCall(call) => panic!("{call:?}"),
        }
    }
    assert_eq!(joined, text);
    let (usage, finish_reason) = done.unwrap();
    assert_eq!(usage.completion_tokens, 8);
    assert_eq!(finish_reason, Some(FinishReason::Stop));
    let sent = &fake.chat_calls()[0].body;
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn a_streamed_tool_call_is_assembled() {
    let fake = FakeAi::start().await;
    let mut request =
        ask(r#"I want a human [[call:handoff_to_human {"reason": "asks for a manager"}]]"#);
    request.tools = tools();
    let events: Vec<StreamEvent> = client(Duration::from_secs(5))
        .chat_stream(Uuid::nil(), &provider(&fake, 8), &request)
        .await
        .unwrap()
        .map(|e| e.unwrap())
        .collect()
        .await;
    let calls: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCall(call) => Some(call.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].name, "handoff_to_human");
    let args: Value = serde_json::from_str(&calls[0].arguments).unwrap();
    assert_eq!(args["reason"], "asks for a manager");
    assert!(matches!(
        events.last(),
        Some(StreamEvent::Done {
            finish_reason: Some(FinishReason::ToolCalls),
            ..
        })
    ));
}

#[tokio::test]
async fn dropping_the_stream_closes_the_connection() {
    let fake = FakeAi::start().await;
    fake.set_chunk_delay(Duration::from_millis(20));
    fake.push_answer(Answer::Text("word ".repeat(500)));
    let mut stream = client(Duration::from_secs(5))
        .chat_stream(Uuid::nil(), &provider(&fake, 8), &ask("talk"))
        .await
        .unwrap();
    assert!(matches!(
        stream.next().await,
        Some(Ok(StreamEvent::Delta(_)))
    ));
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.stream_counts().2 == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fake.stream_counts(), (1, 0, 1));
}

#[tokio::test]
async fn a_stream_retries_before_its_first_byte_only() {
    let fake = FakeAi::start().await;
    fake.fail_next(1, 503, None);
    let events: Vec<_> = client(Duration::from_secs(5))
        .chat_stream(Uuid::nil(), &provider(&fake, 8), &ask("hi"))
        .await
        .unwrap()
        .collect()
        .await;
    assert!(events.iter().all(Result::is_ok));
    assert_eq!(fake.chat_calls().len(), 2);

    // Silence between chunks longer than the timeout ends the stream with Timeout.
    fake.set_chunk_delay(Duration::from_millis(500));
    let mut stream = client(Duration::from_millis(200))
        .chat_stream(Uuid::nil(), &provider(&fake, 8), &ask("hi there"))
        .await
        .unwrap();
    let mut last = None;
    while let Some(event) = stream.next().await {
        last = Some(event);
    }
    assert!(matches!(last, Some(Err(AiError::Timeout))), "{last:?}");
    assert_eq!(fake.chat_calls().len(), 3);
}

#[tokio::test]
async fn the_context_block_reaches_the_answer() {
    let fake = FakeAi::start().await;
    let request = ChatRequest {
        messages: vec![
            Message::system(
                "Answer from the context.\nContext:\n[1] Delivery in Moscow takes 2 days.",
            ),
            Message::user("How fast is delivery?"),
        ],
        ..Default::default()
    };
    let answer = client(Duration::from_secs(5))
        .chat(Uuid::nil(), &provider(&fake, 8), &request)
        .await
        .unwrap();
    assert!(
        answer
            .content
            .unwrap()
            .contains("Delivery in Moscow takes 2 days.")
    );
    assert!(answer.usage.prompt_tokens > 0);
}
