//! Per-layer decode state: a KV cache for attention layers, the last `L-1` gated inputs for
//! short-convolution layers. The conv state has a fixed size; a full attention layer's KV
//! cache grows with the context, which is the memory the hybrid design saves; a sliding
//! attention layer's (LFM3) is a ring of `sliding_window` positions, fixed like the conv's.

use burn::tensor::{Device, Tensor};

use crate::text::config::{LayerKind, Lfm2Config};

/// Keys and values of one attention layer, `[batch, kv_heads, capacity, head_dim]`.
/// Writes go in place (flex mutates a uniquely owned tensor), so a decode step costs the
/// new row, not a copy of the cache.
///
/// A full attention layer's cache holds every position in order: the first `len` slots
/// are filled. A sliding layer's (`window: Some(w)`) is a ring of `w` slots: position `p`
/// lives in slot `p % w`, so it holds the last `min(len, w)` positions, in rotated order
/// (attention does not care about key order; [`ring_key_slots`] says which position each
/// returned key is, for the window mask).
#[derive(Debug, Clone)]
pub struct KvCache {
    k: Option<Tensor<4>>,
    v: Option<Tensor<4>>,
    /// Positions appended so far.
    len: usize,
    window: Option<usize>,
}

impl KvCache {
    pub fn new(batch: usize, kv_heads: usize, capacity: usize, head_dim: usize, device: &Device) -> Self {
        let cap = capacity.max(1);
        Self {
            k: Some(Tensor::zeros([batch, kv_heads, cap, head_dim], device)),
            v: Some(Tensor::zeros([batch, kv_heads, cap, head_dim], device)),
            len: 0,
            window: None,
        }
    }

    /// A ring of `window` positions for a sliding attention layer.
    pub fn sliding(batch: usize, kv_heads: usize, window: usize, head_dim: usize, device: &Device) -> Self {
        Self { window: Some(window.max(1)), ..Self::new(batch, kv_heads, window, head_dim, device) }
    }

    /// Positions appended so far (for a ring, more than it holds once past the window).
    pub fn len(&self) -> usize {
        self.len
    }

    /// The window of a sliding layer's ring.
    pub fn window(&self) -> Option<usize> {
        self.window
    }

    /// Positions held: all of them, or the last `window`.
    fn held(&self) -> usize {
        self.window.map_or(self.len, |w| self.len.min(w))
    }

    /// Marks `len` positions as appended with whatever the buffers hold (a constant from
    /// [`DecodeState::synthetic`]).
    fn assume_filled(&mut self, len: usize) {
        assert!(self.window.is_some() || len <= self.capacity());
        self.len = len;
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn capacity(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.dims()[2])
    }

    /// Appends `k`, `v` (`[batch, kv_heads, t, head_dim]`) and returns the keys and values
    /// this step attends to: everything cached so far, `[batch, kv_heads, len, head_dim]`;
    /// for a ring, the positions [`ring_key_slots`] lists.
    pub fn append(&mut self, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        if let Some(w) = self.window {
            return self.append_ring(k, v, w);
        }
        let [b, h, t, d] = k.dims();
        let end = self.len + t;
        if end > self.capacity() {
            let new_cap = end.max(2 * self.capacity()).next_multiple_of(64);
            for slot in [&mut self.k, &mut self.v] {
                let old = slot.take().expect("cache tensor present");
                let grown = Tensor::zeros([b, h, new_cap, d], &old.device());
                *slot = Some(
                    grown.slice_assign([0..b, 0..h, 0..self.len, 0..d], old.slice([0..b, 0..h, 0..self.len, 0..d])),
                );
            }
        }
        let range = [0..b, 0..h, self.len..end, 0..d];
        let kc = self.k.take().expect("cache tensor present").slice_assign(range.clone(), k);
        let vc = self.v.take().expect("cache tensor present").slice_assign(range, v);
        self.len = end;
        let view = [0..b, 0..h, 0..end, 0..d];
        let out = (kc.clone().slice(view.clone()), vc.clone().slice(view));
        self.k = Some(kc);
        self.v = Some(vc);
        out
    }

    /// One decode step (`t == 1`) writes its position into the ring and attends to the
    /// ring, which then holds exactly the window. A chunk attends to the ring as it was and
    /// to its own keys (the mask keeps each query's window), then leaves its last `w`
    /// positions in the ring.
    fn append_ring(&mut self, k: Tensor<4>, v: Tensor<4>, w: usize) -> (Tensor<4>, Tensor<4>) {
        let [b, h, t, d] = k.dims();
        let held = self.held();
        let (kc, vc) = (self.k.take().expect("cache tensor present"), self.v.take().expect("cache tensor present"));
        let out = if t == 1 {
            None
        } else if held == 0 {
            Some((k.clone(), v.clone()))
        } else {
            let past = [0..b, 0..h, 0..held, 0..d];
            Some((
                Tensor::cat(vec![kc.clone().slice(past.clone()), k.clone()], 2),
                Tensor::cat(vec![vc.clone().slice(past), v.clone()], 2),
            ))
        };
        // The chunk's last min(t, w) positions, in at most two runs of ring slots.
        let keep = t.min(w);
        let (mut kc, mut vc) = (kc, vc);
        let mut from = t - keep;
        while from < t {
            let slot = (self.len + from) % w;
            let run = (w - slot).min(t - from);
            let src = [0..b, 0..h, from..from + run, 0..d];
            let dst = [0..b, 0..h, slot..slot + run, 0..d];
            kc = kc.slice_assign(dst.clone(), k.clone().slice(src.clone()));
            vc = vc.slice_assign(dst, v.clone().slice(src));
            from += run;
        }
        self.len += t;
        let out = out.unwrap_or_else(|| {
            let view = [0..b, 0..h, 0..self.held(), 0..d];
            (kc.clone().slice(view.clone()), vc.clone().slice(view))
        });
        self.k = Some(kc);
        self.v = Some(vc);
        out
    }

    /// Bytes held by the filled part of the cache (f32).
    pub fn bytes(&self) -> usize {
        self.k.as_ref().map_or(0, |k| {
            let [b, h, _, d] = k.dims();
            2 * b * h * self.held() * d * 4
        })
    }
}

/// The slot (position) of each key a sliding layer's [`KvCache::append`] returns, for `t`
/// new positions from `start` with a cache of window `w`: a decode step sees the ring after
/// its write (slot `j` holds the latest position `p <= start` with `p % w == j`); a chunk
/// sees the ring before its writes, then its own `t` positions.
pub fn ring_key_slots(start: usize, t: usize, w: usize) -> Vec<usize> {
    // The latest position at or before `last` in ring slot `j`.
    let latest = |last: usize, j: usize| last - ((last % w + w - j) % w);
    if t == 1 {
        let held = (start + 1).min(w);
        (0..held).map(|j| latest(start, j)).collect()
    } else {
        let held = start.min(w);
        (0..held).map(|j| latest(start - 1, j)).chain(start..start + t).collect()
    }
}

/// The last `kernel - 1` gated conv inputs, `[batch, kernel - 1, hidden]` (zeros at start).
#[derive(Debug, Clone)]
pub struct ConvState {
    pub window: Tensor<3>,
}

impl ConvState {
    pub fn bytes(&self) -> usize {
        self.window.dims().iter().product::<usize>() * 4
    }
}

#[derive(Debug, Clone)]
pub enum LayerState {
    Attention(KvCache),
    Conv(ConvState),
}

impl LayerState {
    /// A conv layer's window. The state is built from the layer types of the model it
    /// decodes ([`DecodeState::new`]), so each layer finds its own kind.
    pub fn conv(&mut self) -> &mut ConvState {
        match self {
            Self::Conv(s) => s,
            Self::Attention(_) => unreachable!("a decode state built for other layer types"),
        }
    }

    /// An attention layer's cache (see [`Self::conv`]).
    pub fn kv(&mut self) -> &mut KvCache {
        match self {
            Self::Attention(kv) => kv,
            Self::Conv(_) => unreachable!("a decode state built for other layer types"),
        }
    }
}

/// Everything a decoder needs to continue a sequence: one state per layer and the number
/// of positions consumed so far.
#[derive(Debug, Clone)]
pub struct DecodeState {
    pub layers: Vec<LayerState>,
    /// Slots consumed so far (the same for every row).
    pub position: usize,
    /// Per row, the pad slots before its first token, for a batch of prompts of different
    /// lengths decoded together (left-padded); empty when the rows are not padded.
    pub pads: Vec<usize>,
}

impl DecodeState {
    /// Empty state for `batch` sequences; `capacity` pre-sizes the KV caches (they grow).
    pub fn new(config: &Lfm2Config, batch: usize, capacity: usize, device: &Device) -> Self {
        let layers = config
            .layer_types
            .iter()
            .map(|kind| match kind {
                LayerKind::Attention => LayerState::Attention(KvCache::new(
                    batch,
                    config.num_key_value_heads,
                    capacity,
                    config.head_dim,
                    device,
                )),
                LayerKind::SlidingAttention => LayerState::Attention(KvCache::sliding(
                    batch,
                    config.num_key_value_heads,
                    config.sliding_window().unwrap_or(capacity),
                    config.head_dim,
                    device,
                )),
                LayerKind::Conv => LayerState::Conv(ConvState {
                    window: Tensor::zeros([batch, config.conv_kernel - 1, config.hidden_size], device),
                }),
            })
            .collect();
        Self { layers, position: 0, pads: Vec::new() }
    }

    /// A state that looks as if `context` positions had been consumed, filled with a
    /// constant: decode speed and memory depend on the context length, not on its content,
    /// so benchmarks at 16k positions need not prefill 16k tokens first. (A constant, not
    /// zeros: freshly zeroed pages can alias the kernel's zero page and read too fast.)
    pub fn synthetic(config: &Lfm2Config, batch: usize, context: usize, capacity: usize, device: &Device) -> Self {
        let mut state = Self::new(config, batch, capacity.max(context), device);
        // (A sliding layer's ring has its window's size whatever the context.)
        for layer in &mut state.layers {
            match layer {
                LayerState::Attention(kv) => {
                    let shape = kv.k.as_ref().expect("cache tensor present").dims();
                    kv.k = Some(Tensor::full(shape, 0.01, device));
                    kv.v = Some(Tensor::full(shape, 0.01, device));
                    kv.assume_filled(context);
                }
                LayerState::Conv(c) => {
                    c.window = Tensor::full(c.window.dims(), 0.01, device);
                }
            }
        }
        state.position = context;
        state
    }

    /// Keeps only `rows` (indices into the batch, in order): finished sequences leave the
    /// batch, so later steps compute only the rest.
    pub fn retain(&mut self, rows: &[usize]) {
        let Some(device) = self.layers.iter().find_map(|l| match l {
            LayerState::Conv(c) => Some(c.window.device()),
            LayerState::Attention(kv) => kv.k.as_ref().map(|k| k.device()),
        }) else {
            return;
        };
        let index = Tensor::<1, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), [rows.len()]),
            &device,
        );
        for layer in &mut self.layers {
            match layer {
                LayerState::Conv(c) => c.window = c.window.clone().select(0, index.clone()),
                LayerState::Attention(kv) => {
                    for slot in [&mut kv.k, &mut kv.v] {
                        if let Some(t) = slot.take() {
                            *slot = Some(t.select(0, index.clone()));
                        }
                    }
                }
            }
        }
        if !self.pads.is_empty() {
            self.pads = rows.iter().map(|&r| self.pads[r]).collect();
        }
    }

    /// Bytes of KV cache and of conv state, at the current context.
    pub fn bytes(&self) -> StateBytes {
        let mut out = StateBytes::default();
        for layer in &self.layers {
            match layer {
                LayerState::Attention(kv) => out.kv += kv.bytes(),
                LayerState::Conv(c) => out.conv += c.bytes(),
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateBytes {
    pub kv: usize,
    pub conv: usize,
}

impl StateBytes {
    pub fn total(&self) -> usize {
        self.kv + self.conv
    }

    /// What a decode state of `config` for `batch` rows holds after `positions` positions,
    /// by formula (f32): `2 * kv_heads * head_dim * 4` bytes per position cached, every
    /// position for a full attention layer and at most `sliding_window` for a sliding one,
    /// and `(kernel - 1) * hidden * 4` bytes per conv layer whatever the context.
    pub fn bound(config: &Lfm2Config, batch: usize, positions: usize) -> Self {
        let per_position = 2 * batch * config.num_key_value_heads * config.head_dim * 4;
        let window = config.sliding_window().unwrap_or(positions);
        let mut out = Self::default();
        for kind in &config.layer_types {
            match kind {
                LayerKind::Attention => out.kv += per_position * positions,
                LayerKind::SlidingAttention => out.kv += per_position * positions.min(window),
                LayerKind::Conv => out.conv += batch * (config.conv_kernel - 1) * config.hidden_size * 4,
            }
        }
        out
    }
}
