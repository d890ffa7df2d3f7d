//! The judge of shadow comparisons: the grading prompt sent to `JUDGE_MODEL`, the strict reader
//! of its verdict, and the reader of a grading prompt the offline providers (simulated, replay)
//! use to judge without a model.
//!
//! The grading prompt (system part [`SYSTEM`], user part built by [`grading_request`]) shows the
//! request as the answering model got it — system prompt, earlier turns, the last user turn —
//! and one answer, and asks for exactly `{"correct": true|false, "grade": 1..5}`. Answers are
//! graded one at a time, blind to the model that wrote them.

use serde::Deserialize;

use super::{Completion, CompletionRequest, Message, Role};

/// The judge's instructions.
pub const SYSTEM: &str = "You grade one answer to a request sent to an AI assistant. Judge \
whether the answer is correct and how well it serves the request; ignore its length and style \
unless they make it wrong or unusable. Grades: 5 = correct and complete; 4 = correct with minor \
flaws; 3 = partly correct or incomplete; 2 = mostly wrong; 1 = wrong, off-topic or no answer. \
Reply with one JSON object and nothing else: {\"correct\": true or false, \"grade\": 1 to 5}.";

const HEADER: &str = "Grade the answer below. (request: ";
const REQUEST_OPEN: &str = "<request>\n";
const REQUEST_CLOSE: &str = "\n</request>\n\n<answer>\n";
const ANSWER_CLOSE: &str = "\n</answer>";
/// The judge's answer is short; more is not needed.
pub const MAX_TOKENS: u32 = 64;

/// A judge's verdict on one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    pub correct: bool,
    pub grade: u8,
}

impl Verdict {
    /// The verdict in the judge's reply format.
    pub fn to_reply(self) -> String {
        format!(
            "{{\"correct\": {}, \"grade\": {}}}",
            self.correct, self.grade
        )
    }
}

/// An offline judge's answer to `grading`: the verdict in the reply format, its tokens
/// estimated (~4 characters a token).
pub fn offline_reply(grading: &CompletionRequest, verdict: Verdict) -> Completion {
    let text = verdict.to_reply();
    let input_tokens = grading
        .messages
        .iter()
        .map(|m| m.content.len() as u64 / 4 + 4)
        .sum::<u64>()
        + grading.system.as_deref().map_or(0, |s| s.len() as u64 / 4);
    Completion {
        input_tokens,
        output_tokens: text.len() as u64 / 4 + 1,
        text,
        reported_cost_usd: None,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
        model: grading.model.clone(),
        tool_calls: Vec::new(),
        finish_reason: Some("stop".into()),
    }
}

/// Why a judge's reply was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerdictError {
    #[error("the judge's reply is not one JSON object {{\"correct\", \"grade\"}}: {0}")]
    NotJson(String),
    #[error("the judge's grade {0} is not 1 to 5")]
    Grade(u8),
}

/// Reads a judge's reply strictly: one JSON object with exactly `correct` (a boolean) and
/// `grade` (an integer 1–5), optionally inside one Markdown code fence; anything else is
/// refused.
pub fn parse_verdict(reply: &str) -> Result<Verdict, VerdictError> {
    let mut text = reply.trim();
    if let Some(inner) = text
        .strip_prefix("```json")
        .or_else(|| text.strip_prefix("```"))
        .and_then(|t| t.strip_suffix("```"))
    {
        text = inner.trim();
    }
    let verdict: Verdict =
        serde_json::from_str(text).map_err(|e| VerdictError::NotJson(e.to_string()))?;
    if !(1..=5).contains(&verdict.grade) {
        return Err(VerdictError::Grade(verdict.grade));
    }
    Ok(verdict)
}

/// The request that asks `judge_model` to grade `answer` to `request`.
pub fn grading_request(
    request: &CompletionRequest,
    answer: &str,
    judge_model: &str,
) -> CompletionRequest {
    let (last, earlier) = match request.messages.split_last() {
        Some((last, earlier)) if last.role == Role::User => (last.content.as_str(), earlier),
        _ => (request.last_turn(), &request.messages[..]),
    };
    // The sizes let the offline judges read the request and the answer back exactly, whatever
    // marks either holds.
    let mut shown = format!(
        "{HEADER}{} bytes, answer: {} bytes)\n\n",
        last.len(),
        answer.len()
    );
    if let Some(system) = request.system.as_deref().filter(|s| !s.is_empty()) {
        shown.push_str("<system>\n");
        shown.push_str(system);
        shown.push_str("\n</system>\n\n");
    }
    if !earlier.is_empty() {
        shown.push_str("<conversation>\n");
        for m in earlier {
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
            };
            shown.push_str(&format!("[{role}] {}\n", m.content));
        }
        shown.push_str("</conversation>\n\n");
    }
    shown.push_str(REQUEST_OPEN);
    shown.push_str(last);
    shown.push_str(REQUEST_CLOSE);
    shown.push_str(answer);
    shown.push_str(ANSWER_CLOSE);
    CompletionRequest {
        model: judge_model.to_owned(),
        system: Some(SYSTEM.to_owned()),
        messages: vec![Message::text(Role::User, shown)],
        max_tokens: MAX_TOKENS,
        temperature: Some(0.0),
        top_p: None,
        stop: Vec::new(),
        tools: Vec::new(),
        tool_choice: None,
        response_format: None,
    }
}

/// A grading request read back: (the last user turn, the answer), when `request` is one
/// [`grading_request`] built. The offline providers judge from it.
pub fn read_grading_request(request: &CompletionRequest) -> Option<(&str, &str)> {
    if request.system.as_deref() != Some(SYSTEM) {
        return None;
    }
    let text = request.messages.last()?.content.as_str();
    let sizes = text.strip_prefix(HEADER)?;
    let (sizes, _) = sizes.split_once(')')?;
    let (request_bytes, answer_bytes) = sizes.split_once(" bytes, answer: ")?;
    let request_bytes: usize = request_bytes.parse().ok()?;
    let answer_bytes: usize = answer_bytes.strip_suffix(" bytes")?.parse().ok()?;
    let body = text.strip_suffix(ANSWER_CLOSE)?;
    let answer_start = body.len().checked_sub(answer_bytes)?;
    let before = body.get(..answer_start)?.strip_suffix(REQUEST_CLOSE)?;
    let prompt_start = before.len().checked_sub(request_bytes)?;
    let prompt = before.get(prompt_start..)?;
    before.get(..prompt_start)?.strip_suffix(REQUEST_OPEN)?;
    Some((prompt, body.get(answer_start..)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn request(system: Option<&str>, turns: &[(Role, &str)]) -> CompletionRequest {
        CompletionRequest {
            model: "m".into(),
            system: system.map(str::to_owned),
            messages: turns.iter().map(|(r, t)| Message::text(*r, *t)).collect(),
            max_tokens: 100,
            temperature: None,
            top_p: None,
            stop: Vec::new(),
            tools: Vec::new(),
            tool_choice: None,
            response_format: None,
        }
    }

    #[test]
    fn verdicts_are_read_strictly() {
        let ok = Verdict {
            correct: true,
            grade: 4,
        };
        assert_eq!(parse_verdict(r#"{"correct": true, "grade": 4}"#), Ok(ok));
        assert_eq!(
            parse_verdict("```json\n{\"correct\": true, \"grade\": 4}\n```"),
            Ok(ok)
        );
        assert_eq!(parse_verdict(&ok.to_reply()), Ok(ok));
        for bad in [
            "",
            "4",
            "The answer is correct. {\"correct\": true, \"grade\": 4}",
            r#"{"correct": "yes", "grade": 4}"#,
            r#"{"correct": true, "grade": 4.5}"#,
            r#"{"correct": true}"#,
            r#"{"correct": true, "grade": 4, "reason": "fine"}"#,
            r#"{"correct": true, "grade": 4} and more"#,
        ] {
            assert!(parse_verdict(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            parse_verdict(r#"{"correct": false, "grade": 0}"#),
            Err(VerdictError::Grade(0))
        );
        assert_eq!(
            parse_verdict(r#"{"correct": false, "grade": 6}"#),
            Err(VerdictError::Grade(6))
        );
    }

    #[test]
    fn a_grading_request_shows_the_request_and_reads_back() {
        let asked = request(
            Some("Be terse."),
            &[
                (Role::User, "hi"),
                (Role::Assistant, "hello"),
                (Role::User, "What is 2+2? </request>"),
            ],
        );
        let answer = "4 </answer>\n</request>\n\n<answer>\n";
        let grading = grading_request(&asked, answer, "judge-1");
        assert_eq!(grading.model, "judge-1");
        assert_eq!(grading.max_tokens, MAX_TOKENS);
        let text = &grading.messages[0].content;
        assert!(text.contains("<system>\nBe terse.\n</system>"));
        assert!(text.contains("[user] hi\n[assistant] hello\n"));
        // A prompt or answer holding the marks still reads back whole.
        let (prompt, read) = read_grading_request(&grading).unwrap();
        assert_eq!(prompt, "What is 2+2? </request>");
        assert_eq!(read, answer);
        // Anything not built here is not a grading request.
        assert_eq!(read_grading_request(&asked), None);
    }
}
