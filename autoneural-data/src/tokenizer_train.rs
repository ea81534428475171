//! Trains a byte-level BPE tokenizer on the message texts of JSONL conversation records and
//! writes it as a Hugging Face tokenizer directory in LFM2's layout, which
//! `autoneural_model::tokenizer::TextTokenizer::from_dir` loads:
//!
//! - `tokenizer.json`: NFC normalizer, ByteLevel pre-tokenizer (no prefix space) and
//!   decoder, BPE model, a post-processor that prepends `<|startoftext|>`. The eight LFM2
//!   specials take ids 0–7 ([`LFM2_SPECIALS`]), then the 256 byte symbols, then the merges;
//!   the image specials ([`IMAGE_SPECIALS`]) follow the BPE vocabulary.
//! - `tokenizer_config.json`: special token names and the chat template.
//! - `chat_template.jinja`: LFM2's chat template ([`CHAT_TEMPLATE`]).
//!
//! The training text is, per message, its role, a newline and its content with `<image>`
//! tags cut out: the same pieces the chat template puts between special tokens, so role
//! names become single tokens and no merge spans a special token.

use std::path::{Path, PathBuf};

use serde_json::json;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::normalizers::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::sources::SourceSpec;
use crate::{DataError, OnBadRecord};

/// LFM2's special tokens, at ids 0..8 in this order.
pub const LFM2_SPECIALS: [&str; 8] = [
    "<|pad|>",
    "<|startoftext|>",
    "<|endoftext|>",
    "<|fim_pre|>",
    "<|fim_mid|>",
    "<|fim_suf|>",
    "<|im_start|>",
    "<|im_end|>",
];

/// LFM2-VL's image specials, added after the BPE vocabulary.
pub const IMAGE_SPECIALS: [&str; 3] = ["<image>", "<|image_start|>", "<|image_end|>"];

pub const PAD_TOKEN: &str = "<|pad|>";
pub const BOS_TOKEN: &str = "<|startoftext|>";
/// End of an assistant turn, where generation stops.
pub const EOS_TOKEN: &str = "<|im_end|>";

/// LFM2's chat template (`\n` here are backslash-n inside Jinja string literals).
pub const CHAT_TEMPLATE: &str = "{{- bos_token -}}{%- for message in messages -%}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

/// The smallest BPE vocabulary: the LFM2 specials and the 256 byte symbols, no merges.
pub const MIN_VOCAB_SIZE: usize = LFM2_SPECIALS.len() + 256;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerTrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("vocabulary size {0} is below the minimum {MIN_VOCAB_SIZE} (8 specials + 256 bytes)")]
    VocabSize(usize),
    #[error("no JSONL files to train on")]
    NoFiles,
    #[error("no message text in {}", files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NoText { files: Vec<PathBuf> },
    #[error("BPE training failed: {0}")]
    Train(String),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Output { path: PathBuf, message: String },
}

/// What was trained and written.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerSummary {
    pub out_dir: PathBuf,
    /// Records read and text pieces trained on.
    pub records: usize,
    pub pieces: usize,
    /// All ids, image specials included.
    pub vocab_size: usize,
    /// Id of `<image>`.
    pub image_token_id: u32,
    /// Every special token with its id, LFM2's then the image ones.
    pub special_ids: Vec<(String, u32)>,
}

/// Trains on the records of `sources` (any format and layout of [`crate::sources`]; a bad
/// record is an error naming its file and line) and writes the tokenizer into `out_dir`.
/// `vocab_size` counts the BPE vocabulary (specials, bytes, merges) and is an upper
/// bound: training stops early when no pair occurs twice. The image specials come on top.
pub fn train_tokenizer(
    sources: &[SourceSpec],
    vocab_size: usize,
    out_dir: &Path,
) -> Result<TokenizerSummary, TokenizerTrainError> {
    if vocab_size < MIN_VOCAB_SIZE {
        return Err(TokenizerTrainError::VocabSize(vocab_size));
    }
    if sources.is_empty() {
        return Err(TokenizerTrainError::NoFiles);
    }
    let (records, pieces) = training_text(sources)?;
    if pieces.is_empty() {
        return Err(TokenizerTrainError::NoText { files: sources.iter().flat_map(|s| s.files.clone()).collect() });
    }

    let mut tokenizer = untrained()?;
    let trainer = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(LFM2_SPECIALS.iter().map(|t| AddedToken::from(*t, true)).collect())
        // Every byte gets a symbol, seen or not, so any text encodes.
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let n_pieces = pieces.len();
    tokenizer
        .train(&mut TrainerWrapper::from(trainer), pieces.into_iter())
        .map_err(|e| TokenizerTrainError::Train(e.to_string()))?;
    tokenizer.add_special_tokens(&IMAGE_SPECIALS.map(|t| AddedToken::from(t, true)));

    let special_ids = special_ids(&tokenizer, out_dir)?;
    write_files(&tokenizer, out_dir)?;
    Ok(TokenizerSummary {
        out_dir: out_dir.to_path_buf(),
        records,
        pieces: n_pieces,
        vocab_size: tokenizer.get_vocab_size(true),
        image_token_id: special_ids[LFM2_SPECIALS.len()].1,
        special_ids,
    })
}

/// Reads every record and returns (records, text pieces).
fn training_text(sources: &[SourceSpec]) -> Result<(usize, Vec<String>), TokenizerTrainError> {
    let mut records = 0;
    let mut pieces = Vec::new();
    for source in sources {
        let mut stream = SourceSpec { shuffle: 0, policy: OnBadRecord::Fail, ..source.clone() }.open()?;
        while let Some(record) = stream.next_record() {
            records += 1;
            for m in record?.messages {
                let text = format!("{}\n{}", m.role.as_str(), m.content);
                pieces.extend(text.split(IMAGE_SPECIALS[0]).filter(|p| !p.is_empty()).map(str::to_string));
            }
        }
    }
    Ok((records, pieces))
}

/// The pipeline around an empty BPE model.
fn untrained() -> Result<Tokenizer, TokenizerTrainError> {
    let post = TemplateProcessing::builder()
        .try_single(format!("{BOS_TOKEN} $A"))
        .and_then(|b| b.try_pair(format!("{BOS_TOKEN} $A {BOS_TOKEN} $B")))
        .map_err(|e| TokenizerTrainError::Train(format!("post-processor template: {e}")))?
        .special_tokens(vec![(BOS_TOKEN, 1)])
        .build()
        .map_err(|e| TokenizerTrainError::Train(format!("post-processor: {e}")))?;
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer
        .with_normalizer(Some(NFC))
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_post_processor(Some(post))
        .with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
    Ok(tokenizer)
}

/// The ids of all specials, checking that LFM2's sit at 0..8 (the post-processor and
/// checkpoints assume it).
fn special_ids(tokenizer: &Tokenizer, out_dir: &Path) -> Result<Vec<(String, u32)>, TokenizerTrainError> {
    let mut out = Vec::new();
    for (i, token) in LFM2_SPECIALS.iter().chain(&IMAGE_SPECIALS).enumerate() {
        let id = tokenizer.token_to_id(token).ok_or_else(|| TokenizerTrainError::Output {
            path: out_dir.join("tokenizer.json"),
            message: format!("trained tokenizer lacks the special token {token}"),
        })?;
        if i < LFM2_SPECIALS.len() && id != i as u32 {
            return Err(TokenizerTrainError::Output {
                path: out_dir.join("tokenizer.json"),
                message: format!("special token {token} got id {id}, expected {i}"),
            });
        }
        out.push((token.to_string(), id));
    }
    Ok(out)
}

fn write_files(tokenizer: &Tokenizer, out_dir: &Path) -> Result<(), TokenizerTrainError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TokenizerTrainError::Io { path, source }
    };
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let path = out_dir.join("tokenizer.json");
    tokenizer
        .save(&path, true)
        .map_err(|e| TokenizerTrainError::Output { path: path.clone(), message: e.to_string() })?;

    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "add_bos_token": false,
        "add_eos_token": false,
        "model_max_length": 1_000_000,
        "chat_template": CHAT_TEMPLATE,
        "extra_special_tokens": IMAGE_SPECIALS,
    });
    let path = out_dir.join("tokenizer_config.json");
    let text = serde_json::to_string_pretty(&config)
        .map_err(|e| TokenizerTrainError::Output { path: path.clone(), message: e.to_string() })?;
    std::fs::write(&path, text + "\n").map_err(io(&path))?;

    let path = out_dir.join("chat_template.jinja");
    std::fs::write(&path, CHAT_TEMPLATE).map_err(io(&path))
}
