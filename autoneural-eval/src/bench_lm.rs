//! Language-model throughput on random weights: prefill and decode tokens/s, and the
//! decode state (KV cache + conv windows) at the final context.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use autoneural_model::kernels::gemv::MAX_ROWS;
use autoneural_model::quant::PrecisionPolicy;
use autoneural_model::quant::packed::{PackedWeights, pack_dropping_floats, quantize_and_pack, with_packed};
use autoneural_model::text::model::PREFILL_CHUNK;
use autoneural_model::text::{DecodeState, LayerKind, Lfm2Config, Lfm2ForCausalLM, Logits, StateBytes};
use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Serialize;
use serde_json::json;

use crate::membw::{Bandwidth, measure_read_bandwidth};

#[derive(Debug, Clone)]
pub struct LmBenchOptions {
    pub prompt_len: usize,
    pub new_tokens: usize,
    /// Positions already in the decode state before the prompt (synthetic, random values).
    pub context: usize,
    pub batch: usize,
}

impl LmBenchOptions {
    /// Within what `config` serves and this process can hold, before anything is allocated:
    /// positions up to `max_position_embeddings`, a batch up to 1024, and a decode state
    /// that fits in memory. The message names the flags.
    pub fn check(&self, config: &Lfm2Config) -> Result<(), String> {
        let positions = self.context.saturating_add(self.prompt_len).saturating_add(self.new_tokens);
        if positions > config.max_position_embeddings {
            return Err(format!(
                "--context + --prompt-len + --new-tokens is {positions} positions, more than the model's context of {}",
                config.max_position_embeddings
            ));
        }
        if !(1..=1024).contains(&self.batch) {
            return Err(format!("--batch {} is not between 1 and 1024", self.batch));
        }
        let attention = config.attention_layers().len() as u64;
        let kv =
            attention * 2 * (self.batch * config.num_key_value_heads * config.head_dim) as u64 * positions as u64 * 4;
        if let Some(limit) = autoneural_io::memory::limit_bytes()
            && kv > limit
        {
            return Err(format!(
                "the KV cache for {positions} positions would take {}, more than this process can hold ({})",
                autoneural_io::memory::human(kv),
                autoneural_io::memory::human(limit)
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LmBenchResult {
    /// `fp32`, or the precision policy whose weights decoding read packed.
    pub precision: String,
    /// Weight matrices read as int8/int4 during decoding (0 in fp32).
    pub packed_matrices: usize,
    pub attention_layers: Vec<usize>,
    pub num_layers: usize,
    pub params: usize,
    pub decode_weight_bytes: usize,
    pub batch: usize,
    pub context: usize,
    pub prompt_len: usize,
    pub new_tokens: usize,
    pub prefill_ms: f64,
    pub prefill_tok_s: f64,
    pub decode_ms_per_token: f64,
    pub decode_tok_s: f64,
    pub final_context: usize,
    pub state_kv_bytes: usize,
    pub state_conv_bytes: usize,
    pub state_total_bytes: usize,
    pub threads: usize,
    /// Packed low-bit bytes the decode steps' products read, per token, counted as they
    /// ran (`None` in fp32).
    pub packed_read_per_token: Option<f64>,
    /// The same by formula: every packed matrix once per token, routed experts `k` of `E`.
    pub packed_active_bytes: Option<f64>,
    /// All packed matrices (what a token would read if it ran every expert).
    pub packed_total_bytes: Option<usize>,
    /// The f32 weights did not fit: each matrix was packed as it was drawn and its f32
    /// values dropped (prefill then runs in chunks of the packed kernels' row limit).
    pub packed_without_floats: bool,
}

fn ids(batch: usize, len: usize, vocab: usize, seed: usize, device: &Device) -> Tensor<2, Int> {
    // a fixed pseudo-random prompt: the speed does not depend on which tokens they are
    let data: Vec<i64> = (0..batch * len).map(|i| ((i * 2654435761 + seed * 97) % vocab) as i64).collect();
    Tensor::from_data(TensorData::new(data, [batch, len]), device)
}

/// Materialises a random model of `config` on `device` (parameters are drawn up front so
/// their cost is not timed).
pub fn random_model(config: &Lfm2Config, device: &Device) -> Lfm2ForCausalLM {
    config.init(device).materialize()
}

pub fn run(model: &Lfm2ForCausalLM, device: &Device, opts: &LmBenchOptions) -> LmBenchResult {
    run_counting(model, device, opts, None, PREFILL_CHUNK)
}

/// [`run`], counting the bytes `packed`'s products read during the decode steps, with
/// prompts prefilled `chunk` positions at a time.
fn run_counting(
    model: &Lfm2ForCausalLM,
    device: &Device,
    opts: &LmBenchOptions,
    packed: Option<&PackedWeights>,
    chunk: usize,
) -> LmBenchResult {
    let cfg = &model.config;
    let capacity = opts.context + opts.prompt_len + opts.new_tokens;
    let fresh = || DecodeState::synthetic(cfg, opts.batch, opts.context, capacity, device);
    // warm-up: thread pool, allocator, code paths
    {
        let mut s = fresh();
        let l = model.prefill(ids(opts.batch, opts.prompt_len.min(8), cfg.vocab_size, 1, device), &mut s, chunk);
        let _ = model.forward(ids(opts.batch, 1, cfg.vocab_size, 2, device), Some(&mut s), Logits::Last).into_data();
        let _ = l.into_data();
    }
    let mut state = fresh();
    let prompt = ids(opts.batch, opts.prompt_len, cfg.vocab_size, 3, device);
    let t = Instant::now();
    let logits = model.prefill(prompt, &mut state, chunk);
    let _ = logits.into_data(); // wait for the device
    let prefill = t.elapsed().as_secs_f64();

    let read_before = packed.map(PackedWeights::bytes_read);
    let t = Instant::now();
    for step in 0..opts.new_tokens {
        let logits =
            model.forward(ids(opts.batch, 1, cfg.vocab_size, 10 + step, device), Some(&mut state), Logits::Last);
        let _ = logits.into_data(); // a real decoder reads the logits to choose the next token
    }
    let decode = t.elapsed().as_secs_f64();
    let tokens = (opts.batch * opts.new_tokens).max(1) as f64;
    let packed_read_per_token = packed.zip(read_before).map(|(p, before)| (p.bytes_read() - before) as f64 / tokens);
    let bytes = state.bytes();
    LmBenchResult {
        precision: "fp32".into(),
        packed_matrices: 0,
        attention_layers: cfg.attention_layers(),
        num_layers: cfg.num_layers(),
        params: model.num_params(),
        decode_weight_bytes: model.decode_weight_bytes(),
        batch: opts.batch,
        context: opts.context,
        prompt_len: opts.prompt_len,
        new_tokens: opts.new_tokens,
        prefill_ms: prefill * 1e3,
        prefill_tok_s: (opts.batch * opts.prompt_len) as f64 / prefill,
        decode_ms_per_token: decode * 1e3 / opts.new_tokens.max(1) as f64,
        decode_tok_s: if opts.new_tokens > 0 { (opts.batch * opts.new_tokens) as f64 / decode } else { 0.0 },
        final_context: state.position,
        state_kv_bytes: bytes.kv,
        state_conv_bytes: bytes.conv,
        state_total_bytes: bytes.total(),
        threads: rayon::current_num_threads(),
        packed_read_per_token,
        packed_active_bytes: None,
        packed_total_bytes: None,
        packed_without_floats: false,
    }
}

/// [`run`] at a precision policy: `fp32` as is; otherwise on the model's weights quantized by
/// the policy, decoding through the packed low-bit kernels (`decode_weight_bytes` then
/// counts the packed bytes of those matrices).
pub fn run_at(
    model: &Lfm2ForCausalLM,
    policy: &PrecisionPolicy,
    device: &Device,
    opts: &LmBenchOptions,
) -> autoneural_model::Result<LmBenchResult> {
    if policy.name == "fp32" {
        return Ok(run(model, device, opts));
    }
    let (quantized, packed) = quantize_and_pack(model.clone(), policy)?;
    Ok(run_packed(&quantized, model.decode_weight_bytes(), packed, policy, device, opts, PREFILL_CHUNK, false))
}

/// [`run_at`] for a model whose f32 weights do not fit: initialised lazily, each matrix
/// packed as it is drawn and its f32 values dropped ([`pack_dropping_floats`]), so only the
/// packed weights (and the embedding table) are ever whole. Prefill runs in chunks the
/// packed kernels take.
pub fn run_at_packed_only(
    config: &Lfm2Config,
    policy: &PrecisionPolicy,
    device: &Device,
    opts: &LmBenchOptions,
) -> autoneural_model::Result<LmBenchResult> {
    let lazy = config.init(device);
    // From shapes: nothing is drawn yet (and the packed model's dropped floats count 1 each).
    let (float_bytes, params) = (lazy.decode_weight_bytes(), lazy.num_params());
    let (model, packed) = pack_dropping_floats(lazy, policy)?;
    let mut r = run_packed(&model, float_bytes, packed, policy, device, opts, MAX_ROWS, true);
    r.params = params;
    Ok(r)
}

/// Decoding through `packed`, with the bytes of weights a token reads: `float_bytes` (the
/// f32 model's) with the packed matrices' share at their packed size.
#[allow(clippy::too_many_arguments)]
fn run_packed(
    model: &Lfm2ForCausalLM,
    float_bytes: usize,
    packed: PackedWeights,
    policy: &PrecisionPolicy,
    device: &Device,
    opts: &LmBenchOptions,
    chunk: usize,
    without_floats: bool,
) -> LmBenchResult {
    let routing = model.config.moe.as_ref().map(|m| (m.num_experts_per_tok, m.num_experts));
    let (active_packed, active_float) = packed.active_bytes(routing);
    let (matrices, total) = (packed.len(), packed.packed_bytes);
    let packed = Arc::new(packed);
    let mut r = with_packed(packed.clone(), || run_counting(model, device, opts, Some(&packed), chunk));
    r.precision = policy.name.clone();
    r.packed_matrices = matrices;
    r.decode_weight_bytes = (float_bytes as f64 - active_float + active_packed).round() as usize;
    r.packed_active_bytes = Some(active_packed);
    r.packed_total_bytes = Some(total);
    r.packed_without_floats = without_floats;
    r
}

/// `bench lm`: one model on random weights at each precision (the first is the baseline of
/// the speed ratios), next to this machine's memory-bandwidth bound measured after them
/// in the same process.
pub struct LmComparison {
    pub preset: String,
    pub device: String,
    pub results: Vec<LmBenchResult>,
    pub bandwidth: Option<Bandwidth>,
}

impl LmComparison {
    pub fn run(
        preset: &str,
        config: &Lfm2Config,
        policies: &[PrecisionPolicy],
        opts: &LmBenchOptions,
        (device, device_name): (&Device, &str),
        bandwidth: bool,
    ) -> autoneural_model::Result<Self> {
        opts.check(config).map_err(autoneural_model::ModelError::Invalid)?;
        // The f32 model, and the quantized copy made from it, must fit; otherwise each
        // matrix is packed as it is drawn (and fp32 cannot run at all).
        let float = 4 * config.init(device).num_params() as u64;
        let fits = autoneural_io::memory::limit_bytes().is_none_or(|limit| 3 * float < limit);
        let results = if fits {
            let model = random_model(config, device);
            policies.iter().map(|p| run_at(&model, p, device, opts)).collect::<Result<Vec<_>, _>>()?
        } else {
            if let Some(p) = policies.iter().find(|p| p.name == "fp32") {
                return Err(autoneural_model::ModelError::Invalid(format!(
                    "{preset}: its f32 weights ({}) do not fit in this process's memory; --precision {} cannot run \
                     (low-bit policies can: each matrix is packed as it is drawn)",
                    autoneural_io::memory::human(float),
                    p.name
                )));
            }
            policies.iter().map(|p| run_at_packed_only(config, p, device, opts)).collect::<Result<Vec<_>, _>>()?
        };
        // measured after the model runs so both see the same machine state
        let bandwidth = bandwidth.then(|| measure_read_bandwidth(1 << 30, 9));
        Ok(Self { preset: preset.into(), device: device_name.into(), results, bandwidth })
    }

    /// Decode tokens/s if every weight byte were read at the measured bandwidth.
    fn bound(&self, r: &LmBenchResult) -> Option<f64> {
        self.bandwidth.map(|b| b.gb_per_s * 1e9 / r.decode_weight_bytes as f64)
    }

    /// One object per precision.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        let base = &self.results[0];
        self.results
            .iter()
            .map(|r| {
                let bound = self.bound(r);
                let mut obj = serde_json::to_value(r).expect("a result serializes");
                obj["preset"] = json!(self.preset);
                obj["device"] = json!(self.device);
                obj["bandwidth_gb_s"] = json!(self.bandwidth.map(|b| b.gb_per_s));
                obj["decode_bound_tok_s"] = json!(bound);
                obj["decode_fraction_of_bound"] = json!(bound.map(|b| r.decode_tok_s / (b * r.batch as f64)));
                obj["decode_speedup"] = json!(r.decode_tok_s / base.decode_tok_s);
                obj
            })
            .collect()
    }

    pub fn text(&self) -> String {
        let base = &self.results[0];
        let mut s = String::new();
        for r in &self.results {
            let _ = writeln!(
                s,
                "{} at {} ({} layers, attention at {:?}), {} params, {} threads, device {}",
                self.preset, r.precision, r.num_layers, r.attention_layers, r.params, r.threads, self.device
            );
            if r.packed_matrices > 0 {
                let how = if r.packed_without_floats { " (packed as drawn; the f32 model does not fit)" } else { "" };
                let _ = writeln!(s, "weights: {} matrices decode from int8/int4{how}", r.packed_matrices);
            }
            if let (Some(read), Some(active), Some(total)) =
                (r.packed_read_per_token, r.packed_active_bytes, r.packed_total_bytes)
            {
                let _ = writeln!(
                    s,
                    "read:    {:.1} MB of packed weights per token, counted as decoded; {:.1} MB by the active-parameter \
                     formula ({:.3}x); {:.1} MB in all packed matrices",
                    read / 1e6,
                    active / 1e6,
                    read / active,
                    total as f64 / 1e6
                );
            }
            let _ = writeln!(
                s,
                "prefill: {} tokens in {:.1} ms = {:.1} tok/s",
                r.prompt_len * r.batch,
                r.prefill_ms,
                r.prefill_tok_s
            );
            let _ = writeln!(
                s,
                "decode:  {} tokens, {:.2} ms/token = {:.2} tok/s ({:.2}x {})",
                r.new_tokens * r.batch,
                r.decode_ms_per_token,
                r.decode_tok_s,
                r.decode_tok_s / base.decode_tok_s,
                base.precision
            );
            let _ = writeln!(
                s,
                "state at context {}: KV {:.2} MiB + conv {:.3} MiB = {:.2} MiB",
                r.final_context,
                r.state_kv_bytes as f64 / 1048576.0,
                r.state_conv_bytes as f64 / 1048576.0,
                r.state_total_bytes as f64 / 1048576.0
            );
            if let (Some(bw), Some(bound)) = (self.bandwidth, self.bound(r)) {
                let _ = writeln!(
                    s,
                    "bound:   {:.2} GB/s (median read bandwidth) / {:.1} MB per token = {:.2} tok/s; decode reaches {:.0}% of it",
                    bw.gb_per_s,
                    r.decode_weight_bytes as f64 / 1e6,
                    bound,
                    100.0 * r.decode_tok_s / (bound * r.batch as f64)
                );
            }
        }
        s
    }
}

/// `bench context`: decode speed and state memory per context length for several layer
/// mixes (e.g. LFM2-1.2B's, LFM3-1.7B's and an all-attention stack), in the same process;
/// the last mix is the baseline of the ratios. Each measured state is shown beside its
/// formula ([`StateBytes::bound`]).
pub struct ContextComparison {
    /// (label, config) per mix; the last is the baseline.
    pub mixes: Vec<(String, Lfm2Config)>,
    /// (mix index, context, result)
    pub rows: Vec<(usize, usize, LmBenchResult)>,
}

impl ContextComparison {
    pub fn run(
        mixes: &[(String, Lfm2Config)],
        contexts: &[usize],
        new_tokens: usize,
        device: &Device,
    ) -> autoneural_model::Result<Self> {
        let opts = |context| LmBenchOptions { prompt_len: 1, new_tokens, context, batch: 1 };
        for (_, cfg) in mixes {
            for &ctx in contexts {
                opts(ctx).check(cfg).map_err(autoneural_model::ModelError::Invalid)?;
            }
        }
        let mut rows = Vec::new();
        for (m, (_, cfg)) in mixes.iter().enumerate() {
            // One model at a time: a 1.7B f32 model and its 64k cache are what this host holds.
            let model = random_model(cfg, device);
            for &ctx in contexts {
                rows.push((m, ctx, run(&model, device, &opts(ctx))));
            }
        }
        Ok(Self { mixes: mixes.to_vec(), rows })
    }

    fn bound(&self, mix: usize, r: &LmBenchResult) -> StateBytes {
        StateBytes::bound(&self.mixes[mix].1, r.batch, r.final_context)
    }

    pub fn json(&self) -> serde_json::Value {
        let rows: Vec<_> = self
            .rows
            .iter()
            .map(|(m, ctx, r)| {
                let mut v = serde_json::to_value(r).expect("a result serializes");
                v["mix"] = json!(self.mixes[*m].0);
                v["layer_types"] = json!(self.mixes[*m].1.layer_types);
                v["requested_context"] = json!(ctx);
                v["state_bound_bytes"] = json!(self.bound(*m, r).total());
                v
            })
            .collect();
        serde_json::Value::Array(rows)
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        for (label, c) in &self.mixes {
            let _ = writeln!(
                s,
                "- {label}: {} layers, {} conv / {} sliding (window {}) / {} full attention, hidden {}, {} KV heads x {}",
                c.num_layers(),
                c.count(LayerKind::Conv),
                c.count(LayerKind::SlidingAttention),
                c.sliding_window().map_or("-".to_string(), |w| w.to_string()),
                c.count(LayerKind::Attention),
                c.hidden_size,
                c.num_key_value_heads,
                c.head_dim
            );
        }
        let base = self.mixes.len() - 1;
        let base_label = &self.mixes[base].0;
        let _ = writeln!(
            s,
            "\n| context | mix | decode tok/s | vs {base_label} | state MiB | formula MiB | state vs {base_label} |"
        );
        s.push_str("| ---: | --- | ---: | ---: | ---: | ---: | ---: |\n");
        let mut contexts: Vec<usize> = Vec::new();
        for (_, c, _) in &self.rows {
            if !contexts.contains(c) {
                contexts.push(*c);
            }
        }
        let mib = |x: usize| x as f64 / 1048576.0;
        for ctx in contexts {
            let Some((_, _, b)) = self.rows.iter().find(|(m, c, _)| *m == base && *c == ctx) else { continue };
            for (m, _, r) in self.rows.iter().filter(|(_, c, _)| *c == ctx) {
                let _ = writeln!(
                    s,
                    "| {ctx} | {} | {:.2} | {:.2}x | {:.2} | {:.2} | {:.2}x |",
                    self.mixes[*m].0,
                    r.decode_tok_s,
                    r.decode_tok_s / b.decode_tok_s,
                    mib(r.state_total_bytes),
                    mib(self.bound(*m, r).total()),
                    r.state_total_bytes as f64 / b.state_total_bytes as f64
                );
            }
        }
        s
    }
}
