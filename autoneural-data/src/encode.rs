//! Records to training sequences: the chat template renders the conversation, each
//! `<image>` becomes the encoder's image tokens, and the loss covers assistant turns only
//! (their text and the template's end-of-turn tokens, never the user's or system's words,
//! never image tokens). Batches are padded to their longest sequence, with masks.
//!
//! Assistant spans are found by rendering the conversation's prefixes: the tokens of
//! "everything before turn i + generation prompt" and of "everything through turn i" bound
//! turn i. A template whose prefixes do not tokenize to prefixes of the whole is refused.

use autoneural_model::tokenizer::{ChatMessage, TextTokenizer};
use autoneural_model::vlm::{IMAGE_TAG, ImageTokens};

use crate::records::{Record, Role};

/// One tokenized conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// `loss_mask[i]`: the model is trained to produce `ids[i]` (from position `i - 1`).
    pub loss_mask: Vec<bool>,
}

/// Encodes `record`; image `k` contributes `tokens_per_image[k]` image tokens (its encoder
/// input's size decides them when a processor keeps each image's size).
pub fn encode_record(
    tok: &TextTokenizer,
    record: &Record,
    images: ImageTokens,
    tokens_per_image: &[usize],
) -> Result<Encoded, String> {
    let messages: Vec<ChatMessage> = record
        .messages
        .iter()
        .map(|m| ChatMessage { role: m.role.as_str().into(), content: m.content.clone() })
        .collect();
    // Images without tags go before the first user text, as at inference.
    let mut messages = messages;
    let tags: usize = messages.iter().map(|m| m.content.matches(IMAGE_TAG).count()).sum();
    if tags == 0 && !record.images.is_empty() {
        if let Some(first_user) = messages.iter_mut().find(|m| m.role == "user") {
            first_user.content = format!("{}{}", IMAGE_TAG.repeat(record.images.len()), first_user.content);
        }
    }
    let tokenize = |msgs: &[ChatMessage], gen_prompt: bool| -> Result<Vec<u32>, String> {
        let text = tok.render_chat(msgs, gen_prompt).map_err(|e| e.to_string())?;
        // A prefix of the conversation holds the first images' tags.
        let counts = &tokens_per_image[..text.matches(IMAGE_TAG).count().min(tokens_per_image.len())];
        images.encode(tok, &text, false, counts).map_err(|e| e.to_string())
    };
    let ids = tokenize(&messages, false)?;
    let mut loss_mask = vec![false; ids.len()];
    for (i, m) in record.messages.iter().enumerate() {
        if m.role != Role::Assistant {
            continue;
        }
        let start = tokenize(&messages[..i], true)?;
        let end = tokenize(&messages[..=i], false)?;
        if !ids.starts_with(&start) || !ids.starts_with(&end) || start.len() > end.len() {
            return Err(format!(
                "line {}: the chat template's rendering of the first {} turns is not a prefix of the whole \
                 conversation, so assistant turns cannot be located",
                record.line,
                i + 1
            ));
        }
        loss_mask[start.len()..end.len()].iter_mut().for_each(|x| *x = true);
    }
    for (mask, &id) in loss_mask.iter_mut().zip(&ids) {
        if id == images.image_token_id {
            *mask = false;
        }
    }
    Ok(Encoded { ids, loss_mask })
}

/// A padded batch, row-major `[rows, len]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub len: usize,
    /// Inputs: `ids[..n-1]` of each sequence, padded with `pad_id`.
    pub inputs: Vec<u32>,
    /// Next-token targets aligned with `inputs`.
    pub targets: Vec<u32>,
    /// Positions whose target is trained (assistant tokens; false on padding).
    pub loss_mask: Vec<bool>,
    /// Real (non-padding) input positions.
    pub attention_mask: Vec<bool>,
}

/// Pads `seqs` (right padding) into next-token-prediction inputs and targets.
pub fn pad_batch(seqs: &[Encoded], pad_id: u32) -> Batch {
    let len = seqs.iter().map(|s| s.ids.len().saturating_sub(1)).max().unwrap_or(0);
    let rows = seqs.len();
    let mut b = Batch {
        rows,
        len,
        inputs: vec![pad_id; rows * len],
        targets: vec![pad_id; rows * len],
        loss_mask: vec![false; rows * len],
        attention_mask: vec![false; rows * len],
    };
    for (r, s) in seqs.iter().enumerate() {
        let n = s.ids.len().saturating_sub(1);
        let o = r * len;
        b.inputs[o..o + n].copy_from_slice(&s.ids[..n]);
        b.targets[o..o + n].copy_from_slice(&s.ids[1..]);
        b.loss_mask[o..o + n].copy_from_slice(&s.loss_mask[1..]);
        b.attention_mask[o..o + n].iter_mut().for_each(|x| *x = true);
    }
    b
}
