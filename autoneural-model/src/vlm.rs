//! The vision-language model: encoder -> connector -> image features spliced into the text
//! embeddings at image-token positions -> the LFM2 backbone, decoded as text is.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::connector::{Projector, ProjectorConfig};
use crate::error::{ModelError, Result};
use crate::generate::{GenerateOptions, Generation, Sampler, generate_from};
use crate::images::{LoadedImage, Preprocess};
use crate::text::{Lfm2Config, Lfm2ForCausalLM};
use crate::tokenizer::TextTokenizer;
pub use crate::vision::lfm2_vl_processor::ImageLayout;
use crate::vision::{EncoderConfig, VisionEncoder};

/// Which on-disk format a model came from (and is saved back to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VlmFormat {
    /// `model_type: "autoneural"` (docs/checkpoint-format.md).
    AutoNeural,
    /// Hugging Face LFM2-VL (`lfm2-vl` / `lfm2_vl`), images tiled as its processor does.
    Lfm2Vl,
    /// Hugging Face LFM3-VL (`lfm3_vl`): LFM3-VL's tower and projector, an LFM3 language
    /// model, images as Qwen2-VL's processor prepares them.
    Lfm3Vl,
}

/// Everything that defines a VLM.
#[derive(Debug, Clone)]
pub struct VlmConfig {
    pub format: VlmFormat,
    pub encoder: EncoderConfig,
    pub projector: ProjectorConfig,
    pub text: Lfm2Config,
    pub image_token_id: u32,
    pub preprocess: Preprocess,
    /// The config.json it was read from, written back on save so fields this code does not
    /// use survive a round trip.
    pub source_json: Option<serde_json::Value>,
    /// A SigLIP tower stored without its `vision_model.` level (transformers 5's own saves).
    pub flat_vit_keys: bool,
    /// Ids around each image's tokens in a prompt (LFM3-VL: `<|vision_start|>`,
    /// `<|vision_end|>`).
    pub image_bounds: Option<(u32, u32)>,
}

impl VlmConfig {
    pub fn new(
        format: VlmFormat,
        encoder: EncoderConfig,
        projector: ProjectorConfig,
        text: Lfm2Config,
        image_token_id: u32,
        preprocess: Preprocess,
        source_json: Option<serde_json::Value>,
    ) -> Self {
        Self {
            format,
            encoder,
            projector,
            text,
            image_token_id,
            preprocess,
            source_json,
            flat_vit_keys: false,
            image_bounds: None,
        }
    }

    /// AutoNeural's layout: `encoder` -> the normalization-free 2-layer MLP connector (hidden
    /// and output at the text width, with biases) -> `text`; the image token is the last id.
    pub fn autoneural(encoder: EncoderConfig, text: Lfm2Config, preprocess: Preprocess) -> Self {
        let size = encoder.image_size();
        let (_, _, vision_dim) = encoder.token_grid(size, size);
        let projector = if let EncoderConfig::Lfm3Vl(v) = &encoder {
            // LFM3-VL's tower keeps its own projector (normalised tokens, merged blocks).
            v.projector(text.hidden_size, text.hidden_size, true)
        } else {
            ProjectorConfig {
                vision_dim,
                hidden: text.hidden_size,
                text_dim: text.hidden_size,
                bias: true,
                downsample: 1,
                layer_norm: false,
                merge_blocks: false,
            }
        };
        let image_token = (text.vocab_size - 1) as u32;
        Self::new(VlmFormat::AutoNeural, encoder, projector, text, image_token, preprocess, None)
    }

    /// Every part's sizes within bounds and the parts consistent, or the field (as an
    /// AutoNeural `config.json` nests it: `vision_config.image_size`) and what is wrong.
    pub fn check(&self) -> std::result::Result<(), (String, String)> {
        self.encoder.check().map_err(|(f, m)| (format!("vision_config.{f}"), m))?;
        self.text.check().map_err(|(f, m)| (format!("text_config.{f}"), m))?;
        let size = self.encoder.image_size();
        let (gh, gw, _) = self.encoder.token_grid(size, size);
        let p = &self.projector;
        if !(1..=1 << 16).contains(&p.hidden) {
            return Err(("projector_hidden_size".into(), format!("{} is not between 1 and 65536", p.hidden)));
        }
        if !(1..=8).contains(&p.downsample) || gh % p.downsample != 0 || gw % p.downsample != 0 {
            return Err((
                "downsample_factor".into(),
                format!("{} must be 1 to 8 and divide the encoder's {gh}x{gw} token grid", p.downsample),
            ));
        }
        if let Preprocess::Lfm2Vl(pre) = &self.preprocess {
            pre.check().map_err(|(f, m)| (format!("image_processor.{f}"), m))?;
            if let EncoderConfig::Vit(v) = &self.encoder
                && (pre.encoder_patch_size, pre.downsample_factor) != (v.patch_size, p.downsample)
            {
                let message = "differs from the vision tower's patch size or the projector's downsample factor";
                return Err(("image_processor.encoder_patch_size".into(), message.into()));
            }
        }
        if self.image_token_id as usize >= self.text.vocab_size {
            let message = format!("{} is outside the vocabulary of {}", self.image_token_id, self.text.vocab_size);
            return Err(("image_token_id".into(), message));
        }
        Ok(())
    }

    /// A randomly initialised model (its parameters drawn when first read), or an error
    /// naming the config field that is out of bounds, or the model's size when it cannot
    /// fit in memory.
    pub fn init(&self, device: &Device) -> Result<VisionLanguageModel> {
        let config = self;
        config.check().map_err(|(field, message)| ModelError::Invalid(format!("model config `{field}`: {message}")))?;
        let model = VisionLanguageModel {
            vision_tower: config.encoder.init(device)?,
            multi_modal_projector: config.projector.init(device),
            language: config.text.init(device),
            config: config.clone(),
        };
        crate::checkpoint::apply::check_memory(&model, "model config")?;
        Ok(model)
    }

    /// Image tokens the language model sees for an encoder input of `h x w`.
    pub fn tokens_per_image(&self, h: usize, w: usize) -> usize {
        image_tokens_at(&self.encoder, &self.projector, h, w)
    }

    /// What counts an image's tokens from its encoder input's size (for batchers, which
    /// hold it instead of the whole config).
    pub fn image_token_count(&self) -> ImageTokenCount {
        ImageTokenCount { encoder: self.encoder.clone(), projector: self.projector }
    }
}

/// Image tokens from an encoder input's size: the encoder's token grid through the
/// connector. A fixed-size preprocessing gives every image the same count; LFM2-VL's and
/// LFM3-VL's processors keep each image's aspect, and so its own count.
#[derive(Debug, Clone)]
pub struct ImageTokenCount {
    encoder: EncoderConfig,
    projector: ProjectorConfig,
}

impl ImageTokenCount {
    /// Tokens for an encoder input of `h x w`.
    pub fn at(&self, h: usize, w: usize) -> usize {
        image_tokens_at(&self.encoder, &self.projector, h, w)
    }
}

/// The encoder's token grid for an `h x w` input, through the connector.
fn image_tokens_at(encoder: &EncoderConfig, projector: &ProjectorConfig, h: usize, w: usize) -> usize {
    let (gh, gw, _) = encoder.token_grid(h, w);
    projector.tokens(gh, gw)
}

/// Keys: `vision_tower.*`, `multi_modal_projector.*`, `language.model.*`, `language.lm_head.*`
/// (mapped to each format's checkpoint keys by the loader).
#[derive(Module, Debug)]
pub struct VisionLanguageModel {
    pub vision_tower: VisionEncoder,
    pub multi_modal_projector: Projector,
    pub language: Lfm2ForCausalLM,
    #[module(skip)]
    pub config: VlmConfig,
}

/// Tiles encoded in one call of [`VisionLanguageModel::features_of_many`]: enough to fill
/// the cores, few enough that a batch of 512 px tiles stays within memory.
pub const ENCODER_BATCH: usize = 16;

impl VisionLanguageModel {
    /// Encoder input `[n, 3, H, W]` -> language-model image features `[n, tokens, hidden]`.
    pub fn image_features(&self, pixels: Tensor<4>) -> Tensor<3> {
        let [_, _, h, w] = pixels.dims();
        let (gh, gw, _) = self.config.encoder.token_grid(h, w);
        self.multi_modal_projector.forward(self.vision_tower.tokens(pixels), gh, gw)
    }

    /// Text embeddings of `ids` with the rows of `features` (`[n_image_tokens, hidden]`, in
    /// order) in place of every `image_token_id`: `[1, t, hidden]`.
    pub fn merge(&self, ids: &[u32], features: Option<Tensor<2>>) -> Result<Tensor<3>> {
        self.merge_batch(ids, 1, ids.len(), features)
    }

    /// [`merge`](Self::merge) for a padded batch: `ids` is row-major `[rows, len]` and the
    /// feature rows fill the image-token positions in that order -> `[rows, len, hidden]`.
    /// One gather from `[text rows; feature rows]`, so gradients reach both the embedding
    /// table and the image features.
    pub fn merge_batch(&self, ids: &[u32], rows: usize, len: usize, features: Option<Tensor<2>>) -> Result<Tensor<3>> {
        let device = self.language.device();
        let id_tensor = Tensor::<2, Int>::from_data(
            TensorData::new(ids.iter().map(|&x| x as i64).collect::<Vec<_>>(), [rows, len]),
            &device,
        );
        let text = self.language.embed(id_tensor);
        let image_positions = ids.iter().filter(|&&x| x == self.config.image_token_id).count();
        let n_features = features.as_ref().map_or(0, |f| f.dims()[0]);
        if image_positions != n_features {
            return Err(ModelError::Invalid(format!(
                "the prompt has {image_positions} image tokens but the images give {n_features} features"
            )));
        }
        let Some(features) = features else { return Ok(text) };
        let d = text.dims()[2];
        let n = rows * len;
        let mut next_feature = n;
        let index: Vec<i64> = ids
            .iter()
            .enumerate()
            .map(|(p, &id)| {
                if id == self.config.image_token_id {
                    next_feature += 1;
                    (next_feature - 1) as i64
                } else {
                    p as i64
                }
            })
            .collect();
        let table = Tensor::cat(vec![text.reshape([n, d]), features], 0);
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [n]), &device);
        Ok(table.select(0, index).reshape([rows, len, d]))
    }

    /// Prompt ids for `prompt` with `images`: each `<image>` becomes that image's tokens
    /// (a count, or an [`ImageLayout`] from [`Self::features_of`]; for LFM2-VL wrapped in
    /// `<|image_start|>`/`<|image_end|>` when the tokenizer has them, tiles after their
    /// markers). A prompt without `<image>` gets the images placed before the text.
    pub fn prompt_ids<L: Clone + Into<ImageLayout>>(
        &self,
        tok: &TextTokenizer,
        prompt: &str,
        raw: bool,
        tokens_per_image: &[L],
    ) -> Result<Vec<u32>> {
        let n = tokens_per_image.len();
        let text = if n > 0 && !prompt.contains(IMAGE_TAG) {
            format!("{}{prompt}", IMAGE_TAG.repeat(n))
        } else {
            prompt.to_string()
        };
        let rendered = if raw { text } else { tok.render_chat(&[crate::tokenizer::ChatMessage::user(text)], true)? };
        self.image_tokens().encode(tok, &rendered, raw, tokens_per_image)
    }

    /// How this model's prompts spell images.
    pub fn image_tokens(&self) -> ImageTokens {
        let special = !matches!(&self.config.preprocess, Preprocess::Lfm2Vl(p) if !p.use_image_special_tokens);
        ImageTokens {
            image_token_id: self.config.image_token_id,
            wrap: self.config.format == VlmFormat::Lfm2Vl && special,
            bounds: self.config.image_bounds,
        }
    }

    /// Preprocessed, encoded and projected `images`: their feature rows in order
    /// (`[total image tokens, hidden]`, none without images) and each one's prompt layout
    /// (its token count, and for a tiled LFM2-VL image its grid). Tiles of one size run
    /// through the encoder together, each on its own patch grid.
    pub fn features_of(&self, images: &[LoadedImage]) -> (Option<Tensor<2>>, Vec<ImageLayout>) {
        self.features_of_many(&[images]).pop().unwrap_or((None, Vec::new()))
    }

    /// [`features_of`](Self::features_of) for several requests at once: the tiles of all
    /// their images go through the encoder together, a batch per tile size (at most
    /// [`ENCODER_BATCH`] tiles a call), and the features come back per request. Batched
    /// generation spends most of a short answer's time here when images are encoded one
    /// by one.
    pub fn features_of_many(&self, requests: &[&[LoadedImage]]) -> Vec<(Option<Tensor<2>>, Vec<ImageLayout>)> {
        let device = self.language.device();
        let mut tiles: Vec<Tensor<4>> = Vec::new();
        // Per request, per image: its processor layout and how many tiles it has.
        let mut images: Vec<Vec<(Option<ImageLayout>, usize)>> = Vec::with_capacity(requests.len());
        for request in requests {
            let mut per_image = Vec::with_capacity(request.len());
            for img in request.iter() {
                let (t, layout) = self.config.preprocess.tiles(img, &device);
                per_image.push((layout, t.len()));
                tiles.extend(t);
            }
            images.push(per_image);
        }
        let mut groups: std::collections::BTreeMap<[usize; 4], Vec<usize>> = Default::default();
        for (i, t) in tiles.iter().enumerate() {
            groups.entry(t.dims()).or_default().push(i);
        }
        let mut features: Vec<Option<Tensor<2>>> = vec![None; tiles.len()];
        for indices in groups.values() {
            for chunk in indices.chunks(ENCODER_BATCH) {
                let batch = Tensor::cat(chunk.iter().map(|&i| tiles[i].clone()).collect(), 0);
                let f = self.image_features(batch);
                let [_, n, d] = f.dims();
                for (k, &i) in chunk.iter().enumerate() {
                    features[i] = Some(f.clone().narrow(0, k, 1).reshape([n, d]));
                }
            }
        }
        let mut features = features.into_iter().map(|f| f.expect("every tile is encoded"));
        images
            .into_iter()
            .map(|per_image| {
                let mut feats = Vec::new();
                let mut layouts = Vec::with_capacity(per_image.len());
                for (layout, count) in per_image {
                    let mine: Vec<Tensor<2>> = features.by_ref().take(count).collect();
                    let tokens = mine.iter().map(|f| f.dims()[0]).sum();
                    feats.extend(mine);
                    let layout = layout.unwrap_or(ImageLayout::Single(tokens));
                    debug_assert_eq!(layout.tokens(), tokens, "the prompt layout and the features disagree");
                    layouts.push(layout);
                }
                ((!feats.is_empty()).then(|| Tensor::cat(feats, 0)), layouts)
            })
            .collect()
    }

    /// Generates an answer to `prompt` about `images`.
    pub fn generate(
        &self,
        tok: &TextTokenizer,
        prompt: &str,
        raw: bool,
        images: &[LoadedImage],
        options: &GenerateOptions,
        sampler: &mut Sampler,
        on_token: impl FnMut(u32) -> Result<()>,
    ) -> Result<VlmGeneration> {
        let t0 = Instant::now();
        let (features, layouts) = self.features_of(images);
        let ids = self.prompt_ids(tok, prompt, raw, &layouts)?;
        let embeds = self.merge(&ids, features)?;
        let vision_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut generation = generate_from(&self.language, &ids, Some(embeds), options, sampler, on_token)?;
        generation.ttft_ms += vision_ms;
        let image_tokens = layouts.iter().map(ImageLayout::tokens).collect();
        Ok(VlmGeneration { generation, vision_ms, image_tokens })
    }
}

/// How `<image>` tags in rendered text become token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageTokens {
    pub image_token_id: u32,
    /// Wrap each image in `<|image_start|>` / `<|image_end|>` when the tokenizer has them
    /// (LFM2-VL's convention).
    pub wrap: bool,
    /// Or between these ids (LFM3-VL's `<|vision_start|>` / `<|vision_end|>`).
    pub bounds: Option<(u32, u32)>,
}

impl ImageTokens {
    /// Tokenizes `rendered` (text after any chat template), each `<image>` becoming image
    /// `k`'s ids: `tokens_per_image[k]` image tokens (a count, or an [`ImageLayout`] whose
    /// tiles, with `wrap`, follow their `<|img_row_R_col_C|>` markers and whose thumbnail
    /// follows `<|img_thumbnail|>`). `special` runs the tokenizer's post-processor (BOS) on
    /// the first segment only.
    pub fn encode<L: Clone + Into<ImageLayout>>(
        &self,
        tok: &TextTokenizer,
        rendered: &str,
        special: bool,
        tokens_per_image: &[L],
    ) -> Result<Vec<u32>> {
        let tags = rendered.matches(IMAGE_TAG).count();
        if tags != tokens_per_image.len() {
            return Err(ModelError::Invalid(format!(
                "the text has {tags} `<image>` tags but {} images were given",
                tokens_per_image.len()
            )));
        }
        let wrap = match self.bounds {
            Some(ids) => Some(ids),
            None if self.wrap => tok.token_id("<|image_start|>").zip(tok.token_id("<|image_end|>")),
            None => None,
        };
        let mut ids = Vec::new();
        for (k, segment) in rendered.split(IMAGE_TAG).enumerate() {
            if k > 0 {
                if let Some((start, _)) = wrap {
                    ids.push(start);
                }
                let layout: ImageLayout = tokens_per_image[k - 1].clone().into();
                layout.push_ids(tok, self.image_token_id, self.wrap, &mut ids)?;
                if let Some((_, end)) = wrap {
                    ids.push(end);
                }
            }
            ids.extend(tok.encode(segment, special && k == 0)?);
        }
        Ok(ids)
    }
}

/// Where an image goes in a prompt.
pub const IMAGE_TAG: &str = "<image>";

/// A generation plus what the images cost.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VlmGeneration {
    #[serde(flatten)]
    pub generation: Generation,
    /// Preprocessing, encoder, connector and embedding merge, all images (included in `ttft_ms`).
    pub vision_ms: f64,
    pub image_tokens: Vec<usize>,
}
