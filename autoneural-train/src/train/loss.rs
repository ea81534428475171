//! The training objective: next-token cross-entropy over the positions the loss mask
//! selects (assistant tokens), and the token accuracy on those positions.

use autoneural_model::vlm::VisionLanguageModel;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::Batch;

/// A padded batch on the device, ready for [`forward_loss`].
pub struct DeviceBatch {
    pub batch: Batch,
    /// Every image of the batch in record order, `[n_images, 3, H, W]`.
    pub pixels: Option<Tensor<4>>,
    /// Conversations in the batch.
    pub records: usize,
    /// Weight of the image-text alignment loss ([`alignment_loss`]); 0 leaves it out.
    pub align_weight: f64,
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
/// place of the image tokens, the language model over the sequence.
pub fn forward_loss(model: &VisionLanguageModel, b: &DeviceBatch) -> autoneural_model::error::Result<LossParts> {
    let device = model.language.device();
    let (rows, len) = (b.batch.rows, b.batch.len);
    let mut pooled = None;
    let features = b.pixels.clone().map(|p| {
        let f = model.image_features(p);
        let [n, t, d] = f.dims();
        if b.align_weight > 0.0 && one_image_per_row(&b.batch.inputs, rows, model.config.image_token_id, t) {
            pooled = Some(f.clone().mean_dim(1).reshape([n, d]));
        }
        f.reshape([n * t, d])
    });
    let align = pooled.map(|img| alignment_loss(model, b, img));
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

/// A contrastive image-text loss, standing in for a pretrained encoder when the vision
/// tower starts from scratch: `img` (`[rows, d]`, each image's tokens after the connector,
/// averaged) against the mean input embedding of its conversation's trained tokens
/// (end-of-turn tokens left out). Each image's softmax over the batch's texts (cosine
/// similarity times 10, CLIP's temperature of 0.1) is trained toward its own text, with
/// conversations of equal answers as positives of each other (the supervised contrastive
/// form). The text side is detached: the image is pulled toward the words the language
/// model reads, not the other way round. Mean over conversations.
pub fn alignment_loss(model: &VisionLanguageModel, b: &DeviceBatch, img: Tensor<2>) -> Tensor<1> {
    let (rows, len) = (b.batch.rows, b.batch.len);
    let device = img.device();
    let eos = &model.language.config.eos_token_ids;
    let answers: Vec<Vec<u32>> = (0..rows)
        .map(|r| {
            (0..len)
                .map(|p| r * len + p)
                .filter(|&i| b.batch.loss_mask[i] && !eos.contains(&b.batch.targets[i]))
                .map(|i| b.batch.targets[i])
                .collect()
        })
        .collect();
    let ids: Vec<u32> = answers.iter().flatten().copied().collect();
    // [rows, m] averaging weights over the concatenated answer tokens.
    let mut avg = vec![0f32; rows * ids.len().max(1)];
    let mut at = 0;
    for (r, a) in answers.iter().enumerate() {
        for k in at..at + a.len() {
            avg[r * ids.len() + k] = 1.0 / a.len() as f32;
        }
        at += a.len();
    }
    let text = if ids.is_empty() {
        Tensor::<2>::zeros(img.dims(), &device)
    } else {
        let table = model.language.embed_ids(&ids).detach();
        let [_, m, d] = table.dims();
        Tensor::<2>::from_data(TensorData::new(avg, [rows, m]), &device).matmul(table.reshape([m, d]))
    };
    let unit = |x: Tensor<2>| x.clone() / x.square().sum_dim(1).sqrt().add_scalar(1e-6);
    let logits = unit(img).matmul(unit(text).transpose()).mul_scalar(10.0);
    // Each row's positives share its weight equally.
    let targets: Vec<f32> = (0..rows)
        .flat_map(|r| {
            let same: Vec<bool> = answers.iter().map(|a| *a == answers[r]).collect();
            let n = same.iter().filter(|&&x| x).count() as f32;
            same.into_iter().map(move |x| if x { 1.0 / n } else { 0.0 })
        })
        .collect();
    let targets = Tensor::<2>::from_data(TensorData::new(targets, [rows, rows]), &device);
    -(log_softmax(logits, 1) * targets).sum().div_scalar(rows as f64)
}

fn int_tensor<const D: usize>(values: &[u32], shape: [usize; D], device: &Device) -> Tensor<D, Int> {
    Tensor::from_data(TensorData::new(values.iter().map(|&x| x as i64).collect::<Vec<_>>(), shape), device)
}
