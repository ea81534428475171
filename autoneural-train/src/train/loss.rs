//! The training objective: next-token cross-entropy over the positions the loss mask
//! selects (assistant tokens), and the token accuracy on those positions.

use autoneural_model::vlm::VisionLanguageModel;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use autoneural_data::Batch;

/// A padded batch on the device, ready for [`forward_loss`].
pub struct DeviceBatch {
    pub batch: Batch,
    /// Every image of the batch in record order, `[n_images, 3, H, W]`.
    pub pixels: Option<Tensor<4>>,
    /// Conversations in the batch.
    pub records: usize,
    /// How the stage weighs its losses.
    pub weights: LossWeights,
    /// Where each conversation came from (`source "vqa", line 12`), for messages.
    pub origins: Vec<String>,
}

/// Weights of a stage's losses (`lm_weight`, `align_weight` in the experiment file).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossWeights {
    /// The language-model loss. 0 with an alignment loss skips the language model's
    /// forward pass: an encoder-alignment stage.
    pub lm: f64,
    /// The image-text alignment loss ([`alignment_loss`]); 0 leaves it out.
    pub align: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self { lm: 1.0, align: 0.0 }
    }
}

impl DeviceBatch {
    /// Positions whose target is trained.
    pub fn loss_tokens(&self) -> usize {
        self.batch.loss_mask.iter().filter(|&&m| m).count()
    }
}

/// Summed loss over the batch's trained positions (still differentiable) and how many of
/// them the model's argmax predicts correctly.
pub struct LossParts {
    /// `sum(-log p(target))` over trained positions, `[1]`.
    pub nll_sum: Tensor<1>,
    /// Correct argmax predictions at trained positions, `[1]` (no gradient).
    pub correct: Tensor<1>,
    /// The image-text alignment loss, mean over conversations, `[1]`, when the batch asks
    /// for it and every conversation has exactly one image.
    pub align: Option<Tensor<1>>,
}

/// Runs the VLM on a batch: images through the encoder and connector, their features in
/// place of the image tokens, the language model over the sequence (skipped when the
/// language-model loss has weight 0 and the alignment loss is computed).
pub fn forward_loss(model: &VisionLanguageModel, b: &DeviceBatch) -> autoneural_model::error::Result<LossParts> {
    let device = model.language.device();
    let (rows, len) = (b.batch.rows, b.batch.len);
    let mut pooled = None;
    let features = b.pixels.clone().map(|p| {
        let f = model.image_features(p);
        let [n, t, d] = f.dims();
        if b.weights.align > 0.0 && one_image_per_row(&b.batch.inputs, rows, model.config.image_token_id, t) {
            pooled = Some(f.clone().mean_dim(1).reshape([n, d]));
        }
        f.reshape([n * t, d])
    });
    let align = pooled.map(|img| alignment_loss(model, b, img));
    if b.weights.lm == 0.0 && align.is_some() {
        // Nothing would flow back from the language model: skip it.
        let zero = Tensor::<1>::zeros([1], &device);
        return Ok(LossParts { nll_sum: zero.clone(), correct: zero, align });
    }
    let embeds = model.merge_batch(&b.batch.inputs, rows, len, features)?;
    let hidden = model.language.hidden_states(embeds, None);
    let logits = model.language.logits(hidden, autoneural_model::text::Logits::All);
    let targets = int_tensor(&b.batch.targets, [rows, len, 1], &device);
    let mask = Tensor::<2>::from_data(
        TensorData::new(b.batch.loss_mask.iter().map(|&m| f32::from(u8::from(m))).collect::<Vec<_>>(), [rows, len]),
        &device,
    );
    let predicted = logits.clone().detach().argmax(2);
    let correct = predicted.equal(targets.clone()).float().reshape([rows, len]) * mask.clone();
    let nll = -log_softmax(logits, 2).gather(2, targets).reshape([rows, len]);
    Ok(LossParts { nll_sum: (nll * mask).sum(), correct: correct.sum(), align })
}

/// Whether every row of the row-major `[rows, len]` `ids` holds exactly one image's
/// `tokens` image tokens, so that image `i` belongs to conversation `i`.
fn one_image_per_row(ids: &[u32], rows: usize, image_token_id: u32, tokens: usize) -> bool {
    rows > 0 && ids.chunks(ids.len() / rows).all(|row| row.iter().filter(|&&x| x == image_token_id).count() == tokens)
}

/// An image-to-words loss, standing in for a pretrained encoder when the vision tower
/// starts from scratch (the classification form of SuperClass, Huang et al. 2024): each
/// image's mean token after the connector (`img`, `[rows, d]`) is scored against every row
/// of the language model's embedding table (cosine similarity times 10), and the softmax
/// over the vocabulary is trained toward the bag of its conversation's answer tokens
/// (end-of-turn tokens left out). The table is detached: the image is pulled toward the
/// words the language model reads, not the other way round, and with a tied head those
/// are the words it writes. Unlike a contrastive loss its negatives are the whole
/// vocabulary, whatever the batch size. Mean over conversations.
pub fn alignment_loss(model: &VisionLanguageModel, b: &DeviceBatch, img: Tensor<2>) -> Tensor<1> {
    let (rows, len) = (b.batch.rows, b.batch.len);
    let device = img.device();
    let eos = &model.language.config.eos_token_ids;
    let table = model.language.embedding_table().detach();
    let [vocab, _] = table.dims();
    // [rows, vocab]: each conversation's answer tokens, as a distribution.
    let mut targets = vec![0f32; rows * vocab];
    for r in 0..rows {
        let answer: Vec<u32> = (r * len..(r + 1) * len)
            .filter(|&i| b.batch.loss_mask[i] && !eos.contains(&b.batch.targets[i]))
            .map(|i| b.batch.targets[i])
            .collect();
        for &t in &answer {
            targets[r * vocab + t as usize] += 1.0 / answer.len() as f32;
        }
    }
    let unit = |x: Tensor<2>| x.clone() / x.square().sum_dim(1).sqrt().add_scalar(1e-6);
    let logits = unit(img).matmul(unit(table).transpose()).mul_scalar(10.0);
    let targets = Tensor::<2>::from_data(TensorData::new(targets, [rows, vocab]), &device);
    -(log_softmax(logits, 1) * targets).sum().div_scalar(rows as f64)
}

fn int_tensor<const D: usize>(values: &[u32], shape: [usize; D], device: &Device) -> Tensor<D, Int> {
    Tensor::from_data(TensorData::new(values.iter().map(|&x| x as i64).collect::<Vec<_>>(), shape), device)
}
