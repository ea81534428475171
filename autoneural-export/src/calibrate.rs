//! Encodings for the activations Qualcomm's tools quantize and the model's own quantization
//! does not ([`crate::placement`]): each graph of a quantized export is run on the export's
//! calibration inputs (the reference image and prompt, driven through the graphs as a host
//! drives them: vision, embeddings, prefill chunks, decode steps) and every such tensor gets
//! an asymmetric encoding of its observed range at the policy's activation bit-width, so
//! AIMET loads the encodings with `strict=True` and the QDQ graphs compute what AIMET and
//! the NPU compute.

use std::collections::HashMap;

use anyhow::{Result, bail};
use autoneural_model::quant::Encoding;
use burn::tensor::{Device, Tensor};

use crate::export::StateEntry;
use crate::graph::Graph;
use crate::interpret::{Interpreter, RANK, Value, min_max};
use crate::lm::{MASK_HIDDEN, MASK_VISIBLE};
use crate::placement::Placement;

/// Observed ranges by tensor name.
#[derive(Debug, Default, Clone)]
pub struct Ranges(HashMap<String, (f32, f32)>);

impl Ranges {
    /// The ranges of `g`'s float constants named in `names` (AIMET takes a constant an op
    /// reads, other than a weighted op's parameters, as an activation).
    pub fn constants<'a>(&mut self, g: &Graph, names: impl IntoIterator<Item = &'a str>) {
        let names: std::collections::HashSet<&str> = names.into_iter().collect();
        for t in g.initializers().iter().filter(|t| names.contains(t.name.as_str())) {
            let values = crate::interpret::float_values(t).unwrap_or_default();
            if let Some(r) = values
                .iter()
                .fold(None, |r: Option<(f32, f32)>, &x| Some(r.map_or((x, x), |(lo, hi)| (lo.min(x), hi.max(x)))))
            {
                self.add(&t.name, r);
            }
        }
    }

    pub fn add(&mut self, name: &str, (lo, hi): (f32, f32)) {
        let e = self.0.entry(name.to_string()).or_insert((lo, hi));
        *e = (e.0.min(lo), e.1.max(hi));
    }

    pub fn observe(&mut self, name: &str, t: &Tensor<RANK>) {
        self.add(name, min_max(t));
    }

    /// Runs `interp` on `feeds`, observing the feeds and every float tensor a node writes. A
    /// value that is not finite is an error naming its tensor (a range would ignore it).
    pub fn run(&mut self, interp: &Interpreter, feeds: HashMap<String, Value>) -> Result<HashMap<String, Value>> {
        for (name, v) in &feeds {
            if let Value::F(t, _) = v {
                self.observe(name, t);
            }
        }
        let mut bad = None;
        let values = interp.run(feeds, &mut |name, t| {
            if bad.is_none() && !t.clone().is_finite().all().into_scalar::<bool>() {
                bad = Some(name.to_string());
            }
            self.observe(name, t)
        })?;
        if let Some(name) = bad {
            bail!("calibration: tensor {name} holds values that are not finite");
        }
        Ok(values)
    }
}

/// Gives every tensor of `placement` on graph `g` an activation encoding: a group that holds
/// one of ours (or whose `Concat` reads one: a KV cache's) takes it; any other gets the
/// union of its members' observed ranges (constants' values included) at `bits`. Returns how
/// many tensors were added.
pub fn complete(g: &mut Graph, placement: &Placement, ranges: &Ranges, bits: u32) -> Result<usize> {
    let mut added = Vec::new();
    for (group, members) in placement.groups() {
        let existing = placement.candidates[group].iter().find_map(|t| g.aimet.activations.get(t)).cloned();
        let enc = match existing {
            Some(e) => e,
            None => {
                let mut range: Option<(f32, f32)> = None;
                for &m in &members {
                    let r = match ranges.0.get(m) {
                        Some(&r) => r,
                        None => bail!(
                            "{}: tensor {m} was not computed on the calibration inputs, so it has no range to quantize it by",
                            g.name()
                        ),
                    };
                    range = Some(range.map_or(r, |(lo, hi)| (lo.min(r.0), hi.max(r.1))));
                }
                let (lo, hi) = range.expect("a group has members");
                Encoding::activation(lo, hi, bits).map_err(|e| anyhow::anyhow!("{}: tensor {group}: {e}", g.name()))?
            }
        };
        // HTP's 16-bit second MatMul input: symmetric over the same range.
        let enc = match placement.symmetric.contains(group) && enc.grid.bits == 16 && !enc.grid.signed {
            true => symmetric(&enc),
            false => enc,
        };
        for m in members {
            match g.aimet.activations.get(m) {
                None => added.push((m.to_string(), enc.clone())),
                Some(own) if own != &enc && placement.symmetric.contains(group) => {
                    eprintln!(
                        "{}: {m}: the checkpoint's asymmetric 16-bit encoding is written symmetric over the same range \
                         (Qualcomm's HTP takes the second input of a MatMul of activations symmetric at 16 bits)",
                        g.name()
                    );
                    added.push((m.to_string(), enc.clone()));
                }
                Some(_) => {}
            }
        }
    }
    let n = added.len();
    g.aimet.activations.extend(added);
    Ok(n)
}

/// Gives every embedding table of `g` (a Gather's float constant, which AIMET and QNN take as
/// an activation) without an encoding one over its values at `bits`: the table is on its
/// weight grid already. For graphs that are not calibrated whole (the Genie layout's parts),
/// so the table keeps an encoding. Returns how many were added.
pub fn gather_tables(g: &mut Graph, bits: u32) -> Result<usize> {
    let tables: Vec<String> = g
        .nodes()
        .iter()
        .filter(|n| n.op_type == "Gather")
        .map(|n| n.input[0].clone())
        .filter(|t| !g.aimet.activations.contains_key(t))
        .collect();
    let mut ranges = Ranges::default();
    ranges.constants(g, tables.iter().map(String::as_str));
    let mut n = 0;
    for t in tables {
        let Some(&(lo, hi)) = ranges.0.get(&t) else { continue };
        let enc = Encoding::activation(lo, hi, bits).map_err(|e| anyhow::anyhow!("{}: table {t}: {e}", g.name()))?;
        g.aimet.activations.insert(t, enc);
        n += 1;
    }
    Ok(n)
}

/// A symmetric (signed, zero point 0) encoding covering what asymmetric `enc` covers.
fn symmetric(enc: &Encoding) -> Encoding {
    let (lo, hi) = enc.grid.range();
    let (s, z) = (enc.scales[0], enc.zero_points[0]);
    let absmax = ((lo - z) * s).abs().max(((hi - z) * s).abs());
    let grid = autoneural_model::quant::grid::Grid::signed(enc.grid.bits);
    let scale = if absmax > 0.0 { absmax / grid.symmetric_max() } else { 1.0 };
    Encoding { grid, scales: vec![scale], zero_points: vec![0.0], ..enc.clone() }
}

/// The activation bit-width of the extra quantizers: the one most of the checkpoint's op
/// inputs use (the KV caches aside), 16 when it has none.
pub fn activation_bits(activations: &std::collections::BTreeMap<String, Encoding>) -> u32 {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for (key, e) in activations {
        if !key.ends_with("_cache") {
            *counts.entry(e.grid.bits).or_default() += 1;
        }
    }
    counts.into_iter().max_by_key(|&(b, n)| (n, b)).map_or(16, |(b, _)| b)
}

/// The host side of the step graphs' loop for calibration, as `manifest.json`'s `loop`
/// states it (and `scripts/verify_onnx.py`'s `Host` implements it): state, cache slots,
/// masks, position.
pub struct Host {
    context: usize,
    state: Vec<StateEntry>,
    values: HashMap<String, Value>,
    /// LFM3's sliding layers: the ring's window and the position each slot holds.
    window: Option<usize>,
    ring: Vec<i64>,
    pub position: usize,
    device: Device,
}

impl Host {
    pub fn new(context: usize, state: Vec<StateEntry>, window: Option<usize>, device: &Device) -> Self {
        let mut values = HashMap::new();
        for st in &state {
            for name in &st.inputs {
                let n: usize = st.shape.iter().product();
                values.insert(name.clone(), Value::float(vec![0.0; n], &st.shape, device));
            }
        }
        let ring = vec![-1; window.unwrap_or(0)];
        Self { context, state, values, window, ring, position: 0, device: device.clone() }
    }

    /// The inputs of a call on `embeds` (`[1, t, hidden]`) at the current position.
    pub fn feeds(&self, embeds: Value) -> Result<HashMap<String, Value>> {
        let t = embeds.shape()[1];
        let (c, p) = (self.context, self.position);
        if p + t > c {
            bail!("calibration: position {p} + {t} is over the context {c}");
        }
        let mut mask = vec![MASK_HIDDEN; t * (c + t)];
        for i in 0..t {
            let row = &mut mask[i * (c + t)..(i + 1) * (c + t)];
            row[..p].fill(MASK_VISIBLE);
            row[c..c + i + 1].fill(MASK_VISIBLE);
        }
        let mut feeds = self.values.clone();
        feeds.insert("inputs_embeds".into(), embeds);
        feeds.insert("position_ids".into(), Value::I((p as i64..(p + t) as i64).collect(), vec![1, t]));
        feeds.insert("attention_mask".into(), Value::float(mask, &[1, 1, t, c + t], &self.device));
        if let Some(w) = self.window {
            let mut mask = vec![MASK_HIDDEN; t * (w + t)];
            for i in 0..t {
                let row = &mut mask[i * (w + t)..(i + 1) * (w + t)];
                for (j, &q) in self.ring.iter().enumerate() {
                    if q >= 0 && q > (p + i) as i64 - w as i64 {
                        row[j] = MASK_VISIBLE;
                    }
                }
                for k in 0..=i {
                    if i - k < w {
                        row[w + k] = MASK_VISIBLE;
                    }
                }
            }
            feeds.insert("sliding_attention_mask".into(), Value::float(mask, &[1, 1, t, w + t], &self.device));
        }
        Ok(feeds)
    }

    /// The host's side of a call's outputs: new conv states, cache writes, the position.
    pub fn advance(&mut self, outputs: &HashMap<String, Value>, t: usize) -> Result<()> {
        let p = self.position;
        for st in &self.state {
            for (input, output) in st.inputs.iter().zip(&st.outputs) {
                let Some(Value::F(new, _)) = outputs.get(output) else { bail!("calibration: no output {output}") };
                if st.kind == "conv" {
                    self.values.insert(input.clone(), Value::F(new.clone(), st.shape.clone()));
                    continue;
                }
                let Some(Value::F(cache, _)) = self.values.get(input) else { bail!("calibration: no state {input}") };
                let mut cache = cache.clone();
                // Slots are axis 2 of `[1, kv, slots, hd]` (axis RANK - 2 padded).
                let slot_axis = RANK - 2;
                // (rows of the call, first slot): one run of slots, or a ring's wrapped rows.
                let runs: Vec<(std::ops::Range<usize>, usize)> =
                    match self.window.filter(|_| st.kind == "sliding_attention") {
                        Some(w) => (t.saturating_sub(w)..t).map(|k| (k..k + 1, (p + k) % w)).collect(),
                        None => vec![(0..t, p)],
                    };
                for (rows, slot) in runs {
                    let n = rows.len();
                    let part = new.clone().narrow(slot_axis, rows.start, n);
                    let mut ranges: [std::ops::Range<usize>; RANK] = std::array::from_fn(|i| 0..cache.dims()[i]);
                    ranges[slot_axis] = slot..slot + n;
                    cache = cache.slice_assign(ranges, part);
                }
                self.values.insert(input.clone(), Value::F(cache, st.shape.clone()));
            }
        }
        if let Some(w) = self.window {
            for k in t.saturating_sub(w)..t {
                self.ring[(p + k) % w] = (p + k) as i64;
            }
        }
        self.position += t;
        Ok(())
    }
}
