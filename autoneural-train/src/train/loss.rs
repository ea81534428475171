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
}

/// Runs the VLM on a batch: images through the encoder and connector, their features in
/// place of the image tokens, the language model over the sequence.
pub fn forward_loss(model: &VisionLanguageModel, b: &DeviceBatch) -> autoneural_model::error::Result<LossParts> {
    let device = model.language.device();
    let (rows, len) = (b.batch.rows, b.batch.len);
    let features = b.pixels.clone().map(|p| {
        let f = model.image_features(p);
        let [n, t, d] = f.dims();
        f.reshape([n * t, d])
    });
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
    Ok(LossParts { nll_sum: (nll * mask).sum(), correct: correct.sum() })
}

fn int_tensor<const D: usize>(values: &[u32], shape: [usize; D], device: &Device) -> Tensor<D, Int> {
    Tensor::from_data(TensorData::new(values.iter().map(|&x| x as i64).collect::<Vec<_>>(), shape), device)
}
