//! The conversation layouts the field's datasets use, read from one row (a JSONL line, a
//! Parquet row as JSON, a WebDataset sample's `.json`):
//!
//! - `messages`: `[{"role": "user", "content": "<image>What is it?"}, ...]`, the content a
//!   string or a list of parts `[{"type": "image"}, {"type": "text", "text": "..."}]`
//!   (Hugging Face chat format);
//! - `conversations`: `[{"from": "human", "value": "..."}, {"from": "gpt", ...}]` (LLaVA,
//!   ShareGPT, LLaVA-OneVision);
//! - `texts`: `[{"user": "...", "assistant": "..."}, ...]` (The Cauldron);
//! - `qa`: plain `question` and `answer` columns (an answer list takes its first).
//!
//! `auto` picks by the columns present, in that order.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::records::{Message, Role};

/// The tag that marks where an image goes in a message.
pub const IMAGE_TAG: &str = "<image>";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    #[default]
    Auto,
    Messages,
    Conversations,
    Texts,
    Qa,
}

impl Layout {
    /// The layout a row uses, by its columns.
    pub fn detect(row: &Map<String, Value>) -> Option<Self> {
        [("messages", Self::Messages), ("conversations", Self::Conversations), ("texts", Self::Texts)]
            .into_iter()
            .find(|(k, _)| row.contains_key(*k))
            .map(|(_, l)| l)
            .or_else(|| (row.contains_key("question") && row.contains_key("answer")).then_some(Self::Qa))
    }
}

/// The turns of `row` in `layout`, or what is wrong with it (naming the field).
pub fn messages(row: &Map<String, Value>, layout: Layout) -> Result<Vec<Message>, String> {
    let layout = match layout {
        Layout::Auto => Layout::detect(row).ok_or_else(|| {
            "no `messages` (role/content), `conversations` (from/value), `texts` (user/assistant) or \
             `question`/`answer` columns"
                .to_string()
        })?,
        l => l,
    };
    let list = |field: &str| -> Result<&Vec<Value>, String> {
        row.get(field)
            .ok_or_else(|| format!("no `{field}` column"))?
            .as_array()
            .ok_or_else(|| format!("`{field}` must be a list"))
    };
    let messages = match layout {
        Layout::Messages => turns(list("messages")?, "messages", "role", "content")?,
        Layout::Conversations => turns(list("conversations")?, "conversations", "from", "value")?,
        Layout::Texts => {
            let mut out = Vec::new();
            for (i, t) in list("texts")?.iter().enumerate() {
                for (key, role) in [("user", Role::User), ("assistant", Role::Assistant)] {
                    let content = t
                        .get(key)
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("`texts[{i}]` has no string `{key}`"))?;
                    out.push(Message { role, content: content.to_string() });
                }
            }
            out
        }
        Layout::Qa => {
            let question = row.get("question").and_then(Value::as_str).ok_or("`question` must be a string")?;
            let answer = match row.get("answer") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(a)) => a.first().and_then(Value::as_str).ok_or("`answer` holds no string")?.into(),
                Some(Value::Number(n)) => n.to_string(),
                _ => return Err("`answer` must be a string or a list of strings".into()),
            };
            vec![
                Message { role: Role::User, content: question.into() },
                Message { role: Role::Assistant, content: answer },
            ]
        }
        Layout::Auto => unreachable!("detected above"),
    };
    if !messages.iter().any(|m| m.role == Role::Assistant) {
        return Err("no assistant turn: nothing to learn from".into());
    }
    Ok(messages)
}

/// A list of turns with a role key and a content key.
fn turns(items: &[Value], field: &str, role_key: &str, content_key: &str) -> Result<Vec<Message>, String> {
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let role = item
            .get(role_key)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("`{field}[{i}]` has no string `{role_key}`"))?;
        let role = Role::parse(role).ok_or_else(|| {
            format!("`{field}[{i}].{role_key}` is {role:?}; expected system, user/human or assistant/gpt")
        })?;
        let content = match item.get(content_key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                content_parts(parts).map_err(|e| format!("`{field}[{i}].{content_key}`: {e}"))?
            }
            _ => return Err(format!("`{field}[{i}]` has no string (or list of parts) `{content_key}`")),
        };
        messages.push(Message { role, content });
    }
    Ok(messages)
}

/// A content given as parts: text parts joined, an image part as [`IMAGE_TAG`] where it
/// stands.
fn content_parts(parts: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for (j, p) in parts.iter().enumerate() {
        match p.get("type").and_then(Value::as_str) {
            Some("text") => out += p.get("text").and_then(Value::as_str).ok_or(format!("part {j} has no `text`"))?,
            Some("image") | Some("image_url") => out += IMAGE_TAG,
            other => return Err(format!("part {j} has type {other:?} (expected \"text\" or \"image\")")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn every_layout_reads_to_the_same_turns() {
        let want = vec![
            Message { role: Role::User, content: "<image>What is it?".into() },
            Message { role: Role::Assistant, content: "a car".into() },
        ];
        let rows = [
            json!({"messages": [{"role": "user", "content": "<image>What is it?"}, {"role": "assistant", "content": "a car"}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
                                {"role": "assistant", "content": [{"type": "text", "text": "a car"}]}]}),
            json!({"conversations": [{"from": "human", "value": "<image>What is it?"}, {"from": "gpt", "value": "a car"}]}),
        ];
        for r in rows {
            assert_eq!(messages(&row(r), Layout::Auto).unwrap(), want);
        }
        // The Cauldron and plain columns carry no tags: images go first, as at inference.
        let texts = json!({"texts": [{"user": "What is it?", "assistant": "a car", "source": "x"}]});
        let qa = json!({"question": "What is it?", "answer": ["a car", "car"]});
        for r in [texts, qa] {
            let m = messages(&row(r), Layout::Auto).unwrap();
            assert_eq!((m[0].content.as_str(), m[1].content.as_str()), ("What is it?", "a car"));
        }
        let err = messages(&row(json!({"text": "x"})), Layout::Auto).unwrap_err();
        assert!(err.contains("no `messages`"), "{err}");
        let err = messages(&row(json!({"question": "q"})), Layout::Qa).unwrap_err();
        assert!(err.contains("`answer`"), "{err}");
    }
}
