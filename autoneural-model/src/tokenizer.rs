//! `tokenizer.json` through the `tokenizers` crate, the chat template of
//! `tokenizer_config.json` (or `chat_template.jinja`) through `minijinja`, and the special
//! tokens that start and stop generation.

use std::path::{Path, PathBuf};

use minijinja::{Environment, ErrorKind, context};
use serde::Serialize;
use serde_json::Value;

use crate::checkpoint::json::read_object;
use crate::error::{ModelError, Result};

/// One chat turn, as templates expect it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: "user".into(), content: content.into() }
    }
}

#[derive(Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    chat_template: Option<(PathBuf, String)>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    stop_ids: Vec<u32>,
}

/// A special token in `tokenizer_config.json`: a string or `{"content": ...}`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json` and, when present, `dir/tokenizer_config.json`,
    /// `dir/chat_template.jinja` and `dir/generation_config.json`. `eos_ids` are the
    /// model config's EOS ids; all sources of EOS ids are merged into the stop set.
    pub fn from_dir(dir: &Path, eos_ids: &[u32]) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(ModelError::Tokenizer {
                path,
                message: "file not found (the checkpoint needs a tokenizer.json)".into(),
            });
        }
        let bytes = autoneural_io::read::read(&path, autoneural_io::read::TOKENIZER)?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| ModelError::Tokenizer { path: path.clone(), message: e.to_string() })?;
        let mut out =
            Self { inner, path, chat_template: None, bos_token: None, eos_token: None, stop_ids: eos_ids.to_vec() };

        let cfg_path = dir.join("tokenizer_config.json");
        if cfg_path.exists() {
            let cfg = read_object(&cfg_path)?;
            out.bos_token = token_text(cfg.get("bos_token"));
            out.eos_token = token_text(cfg.get("eos_token"));
            out.chat_template = match cfg.get("chat_template") {
                None | Some(Value::Null) => None,
                Some(Value::String(t)) => Some((cfg_path.clone(), t.clone())),
                // a list of named templates: take "default"
                Some(Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template").and_then(|s| s.as_str()))
                    .map(|t| (cfg_path.clone(), t.to_string())),
                Some(other) => {
                    return Err(ModelError::config(
                        &cfg_path,
                        "chat_template",
                        format!("expected a string or a list of templates, found {other}"),
                    ));
                }
            };
        }
        let jinja = dir.join("chat_template.jinja");
        if out.chat_template.is_none() && jinja.exists() {
            let text = autoneural_io::read::read_to_string(&jinja, autoneural_io::read::CONFIG)?;
            out.chat_template = Some((jinja, text));
        }
        let gen_path = dir.join("generation_config.json");
        if gen_path.exists() {
            let gen_cfg = read_object(&gen_path)?;
            let ids = crate::checkpoint::json::Fields::new(&gen_path, &gen_cfg).ids_opt(&["eos_token_id"])?;
            out.stop_ids.extend(ids.unwrap_or_default());
        }
        if let Some(eos) = &out.eos_token {
            if let Some(id) = out.inner.token_to_id(eos) {
                out.stop_ids.push(id);
            }
        }
        out.stop_ids.sort_unstable();
        out.stop_ids.dedup();
        Ok(out)
    }

    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// The id of a token string (added/special tokens included), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    fn err(&self, message: impl std::fmt::Display) -> ModelError {
        ModelError::Tokenizer { path: self.path.clone(), message: message.to_string() }
    }

    /// Token ids of `text`; `special` runs the tokenizer's post-processor (e.g. BOS).
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, special).map_err(|e| self.err(e))?.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| self.err(e))
    }

    /// Renders the chat template as transformers' `apply_chat_template(tokenize=False)`.
    pub fn render_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let (path, template) = self.chat_template.as_ref().ok_or_else(|| {
            self.err("the checkpoint has no chat template (tokenizer_config.json `chat_template` or chat_template.jinja); use --raw")
        })?;
        let terr = |e: minijinja::Error| ModelError::Template { path: path.clone(), message: format!("{e:#}") };
        if template.trim().is_empty() {
            return Err(ModelError::Template {
                path: path.clone(),
                message: "is empty, so no prompt can be built from it; fix it, or pass --raw".into(),
            });
        }
        let mut env = Environment::new();
        // Hugging Face renders templates with these Jinja settings.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", template).map_err(terr)?;
        let tmpl = env.get_template("chat").map_err(terr)?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        })
        .map_err(terr)
    }

    /// The prompt ids for a user message: through the chat template (whose text already
    /// holds any BOS, so the post-processor is not run again), or, with `raw`, the text as
    /// is with the tokenizer's post-processor.
    pub fn encode_prompt(&self, prompt: &str, raw: bool) -> Result<Vec<u32>> {
        if raw {
            return self.encode(prompt, true);
        }
        let text = self.render_chat(&[ChatMessage::user(prompt)], true)?;
        self.encode(&text, false)
    }
}

/// Turns a growing list of ids into text pieces as soon as they decode to whole characters.
pub struct StreamDecoder<'a> {
    tokenizer: &'a TextTokenizer,
    ids: Vec<u32>,
    emitted: usize,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tokenizer: &'a TextTokenizer) -> Self {
        Self { tokenizer, ids: Vec::new(), emitted: 0 }
    }

    /// The new text that `id` completes (empty while a multi-byte character is unfinished).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids, true)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(String::new());
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(piece)
    }
}
