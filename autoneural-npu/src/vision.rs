//! Analytic op lists of the vision side at a given input resolution, from configs alone
//! (no weights are allocated): MobileNetV5 block by block as `autoneural_model::vision`
//! computes it (and `autoneural_export::vision` writes it), the SigLIP/InternViT-style ViT,
//! and the connector.

use autoneural_model::connector::ProjectorConfig;
use autoneural_model::nn::conv_norm::conv_padding;
use autoneural_model::vision::arch::{BlockKind, MobileNetV5Arch, NormKind, ResolvedBlock, make_divisible};
use autoneural_model::vision::lfm3_vl::Lfm3VlVisionConfig;
use autoneural_model::vision::{EncoderConfig, VitConfig};

use super::builder::{Builder, Fm};
use super::ops::{Bits, OpCost, OpKind};

/// Encoder + connector at an `s x s` input: the ops of `vision_encoder.onnx`, and the
/// number of image tokens the language model receives.
pub fn vision_ops(
    encoder: &EncoderConfig,
    projector: &ProjectorConfig,
    s: usize,
    bits: Bits,
) -> Result<(Vec<OpCost>, usize), String> {
    let mut b = Builder::new(bits);
    let (gh, gw, dim) = match encoder {
        EncoderConfig::MobileNetV5(arch) => {
            let y = mobilenet(&mut b, arch, s)?;
            (y.h, y.w, y.c)
        }
        EncoderConfig::Vit(v) => vit(&mut b, v, s)?,
        EncoderConfig::Lfm3Vl(v) => lfm3_vl_tower(&mut b, v, s)?,
    };
    if dim != projector.vision_dim {
        return Err(format!("the encoder gives {dim} channels but the connector takes {}", projector.vision_dim));
    }
    let tokens = connector(&mut b, projector, gh, gw)?;
    Ok((b.ops, tokens))
}

/// The connector on a `gh x gw` grid of `vision_dim` features; returns the token count.
fn connector(b: &mut Builder, p: &ProjectorConfig, gh: usize, gw: usize) -> Result<usize, String> {
    let f = p.downsample.max(1);
    if !gh.is_multiple_of(f) || !gw.is_multiple_of(f) {
        return Err(format!("a {gh}x{gw} token grid does not unshuffle by {f}"));
    }
    let tokens = p.tokens(gh, gw);
    let in_dim = p.vision_dim * f * f;
    let n = (tokens * in_dim) as u64;
    if p.merge_blocks {
        // LFM3-VL: each token normalised, then blocks of consecutive tokens concatenated
        // (a reshape: no data moves).
        if p.layer_norm {
            b.norm("connector.layer_norm", n, 2 * p.vision_dim as u64);
        }
    } else {
        if f > 1 {
            b.simple("connector.pixel_unshuffle", OpKind::DataMovement, n, n);
        }
        if p.layer_norm {
            b.norm("connector.layer_norm", n, 2 * in_dim as u64);
        }
    }
    let w = b.bits.weight;
    b.linear("connector.linear_1", tokens, in_dim, p.hidden, p.bias, w);
    b.pointwise("connector.gelu", (tokens * p.hidden) as u64, 1);
    b.linear("connector.linear_2", tokens, p.hidden, p.text_dim, p.bias, w);
    Ok(tokens)
}

/// A convolution as `Conv2d::forward` pads it; returns the output map.
#[allow(clippy::too_many_arguments)]
fn conv(
    b: &mut Builder,
    arch: &MobileNetV5Arch,
    name: &str,
    x: Fm,
    out_c: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    depthwise: bool,
    bias: bool,
) -> Fm {
    let (pt, pb) = conv_padding(arch.pad_type, x.h, k, stride, dilation);
    let (pl, pr) = conv_padding(arch.pad_type, x.w, k, stride, dilation);
    let size = |n: usize, p: usize| (n + p).saturating_sub(dilation * (k - 1) + 1) / stride + 1;
    let out = Fm { c: out_c, h: size(x.h, pt + pb), w: size(x.w, pl + pr) };
    b.conv(name, x, out, k, if depthwise { x.c } else { 1 }, bias);
    out
}

fn norm(b: &mut Builder, arch: &MobileNetV5Arch, name: &str, x: Fm) {
    let params = match arch.norm {
        NormKind::Rms => x.c,
        NormKind::Batch => 4 * x.c,
    };
    b.norm(name, x.elems(), params as u64);
}

/// Conv -> norm (-> GELU), timm's ConvNormAct.
#[allow(clippy::too_many_arguments)]
fn conv_norm(
    b: &mut Builder,
    arch: &MobileNetV5Arch,
    name: &str,
    x: Fm,
    out_c: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    depthwise: bool,
    act: bool,
) -> Fm {
    let y = conv(b, arch, &format!("{name}.conv"), x, out_c, k, stride, dilation, depthwise, false);
    norm(b, arch, &format!("{name}.bn"), y);
    if act {
        b.pointwise(&format!("{name}.gelu"), y.elems(), 1);
    }
    y
}

/// Layer scale and residual add at the end of a block.
fn scale_add(b: &mut Builder, name: &str, y: Fm, scale: bool, skip: bool) {
    if scale {
        b.scale(&format!("{name}.layer_scale"), y.elems(), y.c as u64);
    }
    if skip {
        b.pointwise(&format!("{name}.add"), y.elems(), 2);
    }
}

/// The geometry of a UIR block (`UniversalInvertedResidual::new`).
struct Uir {
    in_chs: usize,
    out_chs: usize,
    start: usize,
    mid: usize,
    end: usize,
    exp: f64,
    stride: usize,
    dilation: usize,
    skip: bool,
    scale: bool,
}

fn uir(b: &mut Builder, arch: &MobileNetV5Arch, name: &str, x: Fm, u: &Uir) -> Fm {
    let mid_c = make_divisible(u.in_chs as f64 * u.exp, 8);
    let start_stride = if u.mid == 0 { u.stride } else { 1 };
    let end_stride = if u.start == 0 && u.mid == 0 { u.stride } else { 1 };
    let d = u.dilation;
    let mut y = x;
    if u.start > 0 {
        y = conv_norm(b, arch, &format!("{name}.dw_start"), y, y.c, u.start, start_stride, d, true, false);
    }
    y = conv_norm(b, arch, &format!("{name}.pw_exp"), y, mid_c, 1, 1, 1, false, true);
    if u.mid > 0 {
        y = conv_norm(b, arch, &format!("{name}.dw_mid"), y, mid_c, u.mid, u.stride, d, true, true);
    }
    y = conv_norm(b, arch, &format!("{name}.pw_proj"), y, u.out_chs, 1, 1, 1, false, false);
    if u.end > 0 {
        y = conv_norm(b, arch, &format!("{name}.dw_end"), y, y.c, u.end, end_stride, d, true, false);
    }
    scale_add(b, name, y, u.scale, u.skip);
    y
}

fn block(b: &mut Builder, arch: &MobileNetV5Arch, name: &str, x: Fm, r: &ResolvedBlock) -> Fm {
    let s = &r.spec;
    let out_c = s.out_chs;
    let skip = r.in_chs == out_c && s.stride == 1 && !s.noskip;
    let scale = arch.layer_scale_init_value.is_some();
    match s.kind {
        BlockKind::EdgeResidual { kernel, exp_ratio } => {
            let mid = make_divisible(r.in_chs as f64 * exp_ratio, 8);
            let y = conv(b, arch, &format!("{name}.conv_exp"), x, mid, kernel, s.stride, r.dilation, false, false);
            norm(b, arch, &format!("{name}.bn1"), y);
            b.pointwise(&format!("{name}.gelu"), y.elems(), 1);
            let y = conv(b, arch, &format!("{name}.conv_pwl"), y, out_c, 1, 1, 1, false, false);
            norm(b, arch, &format!("{name}.bn2"), y);
            scale_add(b, name, y, false, skip);
            y
        }
        BlockKind::UniversalInvertedResidual { start_kernel, mid_kernel, end_kernel, exp_ratio } => {
            let u = Uir {
                in_chs: r.in_chs,
                out_chs: out_c,
                start: start_kernel,
                mid: mid_kernel,
                end: end_kernel,
                exp: exp_ratio,
                stride: s.stride,
                dilation: r.dilation,
                skip,
                scale,
            };
            uir(b, arch, name, x, &u)
        }
        BlockKind::MultiQueryAttention { kv_kernel, num_heads, key_dim, kv_stride } => {
            norm(b, arch, &format!("{name}.norm"), x);
            conv(b, arch, &format!("{name}.attn.query.proj"), x, num_heads * key_dim, 1, 1, 1, false, false);
            let mut kv = |what: &str| {
                let mut y = x;
                if kv_stride > 1 {
                    let n = format!("{name}.attn.{what}.down_conv");
                    y = conv(b, arch, &n, y, y.c, kv_kernel, kv_stride, r.dilation, true, false);
                    norm(b, arch, &format!("{name}.attn.{what}.norm"), y);
                }
                conv(b, arch, &format!("{name}.attn.{what}.proj"), y, key_dim, 1, 1, 1, false, false)
            };
            let k = kv("key");
            kv("value");
            let (rows, p, d) = ((num_heads * x.h * x.w) as u64, (k.h * k.w) as u64, key_dim as u64);
            let scores = b.simple(&format!("{name}.attn.scores"), OpKind::Attention, rows * d + p * d, rows * p);
            scores.macs = rows * p * d;
            b.simple(&format!("{name}.attn.softmax"), OpKind::Softmax, rows * p, rows * p);
            let av = b.simple(&format!("{name}.attn.probs_v"), OpKind::Attention, rows * p + p * d, rows * d);
            av.macs = rows * p * d;
            let o = Fm { c: num_heads * key_dim, h: x.h, w: x.w };
            let y = conv(b, arch, &format!("{name}.attn.output.proj"), o, out_c, 1, 1, 1, false, false);
            scale_add(b, name, y, scale, skip);
            y
        }
    }
}

/// MobileNetV5 at `s x s`: stem, blocks, fusion adapter; returns the `[c, r, r]` output.
pub fn mobilenet(b: &mut Builder, arch: &MobileNetV5Arch, s: usize) -> Result<Fm, String> {
    let resolved = arch.resolve().map_err(|e| e.to_string())?;
    let pixels = Fm { c: 3, h: s, w: s };
    let stem = conv(b, arch, "conv_stem.conv", pixels, arch.stem_size, 3, 2, 1, false, true);
    norm(b, arch, "conv_stem.bn", stem);
    b.pointwise("conv_stem.gelu", stem.elems(), 1);
    let mut x = stem;
    let mut taps = Vec::new();
    if resolved.msfa_taps.contains(&0) {
        taps.push(x);
    }
    for (si, stage) in resolved.stages.iter().enumerate() {
        for (bi, r) in stage.iter().enumerate() {
            x = block(b, arch, &format!("blocks.{si}.{bi}"), x, r);
        }
        if resolved.msfa_taps.contains(&(si + 1)) {
            taps.push(x);
        }
    }
    // Fusion adapter: nearest-upsample to the finest tapped grid, concat, UIR FFN, pool.
    let (h, w) = (taps[0].h, taps[0].w);
    for (i, t) in taps.iter().enumerate() {
        if t.h < h || t.w < w {
            let up = Fm { h, w, ..*t };
            b.simple(&format!("msfa.resize.{i}"), OpKind::DataMovement, t.elems(), up.elems());
        }
    }
    let cat = Fm { c: resolved.msfa_in_chs, h, w };
    b.simple("msfa.concat", OpKind::DataMovement, cat.elems(), cat.elems());
    let ffn = Uir {
        in_chs: cat.c,
        out_chs: arch.num_features,
        start: 0,
        mid: 0,
        end: 0,
        exp: 2.0,
        stride: 1,
        dilation: 1,
        skip: false,
        scale: false,
    };
    let y = uir(b, arch, "msfa.ffn", cat, &ffn);
    let r = arch.msfa_output_resolution;
    let out = Fm { c: y.c, h: r, w: r };
    if (h, w) != (r, r) {
        let what = if !h.is_multiple_of(r) || !w.is_multiple_of(r) { "msfa.resize_bilinear" } else { "msfa.avg_pool" };
        b.simple(what, OpKind::DataMovement, y.elems(), out.elems());
    }
    norm(b, arch, "msfa.norm", out);
    Ok(out)
}

/// A ViT at `s x s` (patches of `patch_size`, the remainder cropped); returns `(gh, gw, d)`.
pub fn vit(b: &mut Builder, v: &VitConfig, s: usize) -> Result<(usize, usize, usize), String> {
    let (gh, gw) = v.grid(s, s);
    if gh == 0 || gw == 0 || v.num_attention_heads == 0 || !v.hidden_size.is_multiple_of(v.num_attention_heads) {
        return Err(format!(
            "a ViT with patch {} and {} heads cannot take {s}x{s}",
            v.patch_size, v.num_attention_heads
        ));
    }
    let (t, d, p, c) = (gh * gw, v.hidden_size, v.patch_size, v.num_channels);
    let (nh, hd) = (v.num_attention_heads, v.hidden_size / v.num_attention_heads);
    let w = b.bits.weight;
    let td = (t * d) as u64;
    b.linear("embeddings.patch_embedding", t, c * p * p, d, true, w);
    b.scale("embeddings.position_embedding", td, (v.num_patches * d) as u64);
    for l in 0..v.num_hidden_layers {
        let n = |x: &str| format!("layers.{l}.{x}");
        b.norm(&n("layer_norm1"), td, 2 * d as u64);
        for proj in ["q_proj", "k_proj", "v_proj"] {
            b.linear(&n(&format!("self_attn.{proj}")), t, d, d, true, w);
        }
        let (rows, keys) = ((nh * t) as u64, t as u64);
        let scores = b.simple(&n("self_attn.scores"), OpKind::Attention, 2 * td, rows * keys);
        scores.macs = rows * keys * hd as u64;
        b.simple(&n("self_attn.softmax"), OpKind::Softmax, rows * keys, rows * keys);
        let av = b.simple(&n("self_attn.probs_v"), OpKind::Attention, rows * keys + td, td);
        av.macs = rows * keys * hd as u64;
        b.linear(&n("self_attn.out_proj"), t, d, d, true, w);
        b.pointwise(&n("residual1"), td, 2);
        b.norm(&n("layer_norm2"), td, 2 * d as u64);
        b.linear(&n("mlp.fc1"), t, d, v.intermediate_size, true, w);
        b.pointwise(&n("mlp.gelu"), (t * v.intermediate_size) as u64, 1);
        b.linear(&n("mlp.fc2"), t, v.intermediate_size, d, true, w);
        b.pointwise(&n("residual2"), td, 2);
    }
    b.norm("post_layernorm", td, 2 * d as u64);
    Ok((gh, gw, d))
}

/// LFM3-VL's tower at an `s x s` image, as `autoneural_model::vision::lfm3_vl` computes it:
/// the patch embedding, then per layer a gated depthwise `k x k` convolution on the patch
/// grid or bidirectional GQA over every patch, and the SwiGLU.
pub fn lfm3_vl_tower(b: &mut Builder, v: &Lfm3VlVisionConfig, s: usize) -> Result<(usize, usize, usize), String> {
    let (gh, gw) = v.grid(s, s);
    let m = v.spatial_merge_size;
    if gh == 0 || gw == 0 || !gh.is_multiple_of(m) || !gw.is_multiple_of(m) || v.check().is_err() {
        return Err(format!("an LFM3-VL tower with patch {} and merge {m} cannot take {s}x{s}", v.patch_size));
    }
    let (t, d, ff) = (gh * gw, v.hidden_size, v.intermediate_size);
    let (h, kvh, hd) = (v.num_attention_heads, v.num_key_value_heads, v.head_dim());
    let w = b.bits.weight;
    let td = (t * d) as u64;
    b.linear("patchifier", t, v.patch_dim(), d, false, w);
    b.norm("embedding_norm", td, d as u64);
    for (l, &attention) in v.attention.iter().enumerate() {
        let n = |x: &str| format!("layers.{l}.{x}");
        b.norm(&n("operator_norm"), td, d as u64);
        if attention {
            b.linear(&n("self_attn.q_proj"), t, d, h * hd, false, w);
            b.linear(&n("self_attn.k_proj"), t, d, kvh * hd, false, w);
            b.linear(&n("self_attn.v_proj"), t, d, kvh * hd, false, w);
            let (q, kv) = ((t * h * hd) as u64, (t * kvh * hd) as u64);
            b.norm(&n("self_attn.q_layernorm"), q, hd as u64);
            b.norm(&n("self_attn.k_layernorm"), kv, hd as u64);
            b.pointwise(&n("self_attn.rope_q"), q, 3);
            b.pointwise(&n("self_attn.rope_k"), kv, 3);
            let (rows, keys) = ((h * t) as u64, t as u64);
            let scores = b.simple(&n("self_attn.scores"), OpKind::Attention, q + kv, rows * keys);
            scores.macs = rows * keys * hd as u64;
            b.simple(&n("self_attn.softmax"), OpKind::Softmax, rows * keys, rows * keys);
            let av = b.simple(&n("self_attn.probs_v"), OpKind::Attention, rows * keys + kv, q);
            av.macs = rows * keys * hd as u64;
            b.linear(&n("self_attn.out_proj"), t, h * hd, d, false, w);
        } else {
            b.linear(&n("conv.in_proj"), t, d, 3 * d, false, w);
            b.pointwise(&n("conv.gate_b"), td, 2);
            let grid = Fm { c: d, h: gh, w: gw };
            b.conv(&n("conv.spatial_conv"), grid, grid, v.conv_kernel_size, d, false);
            b.pointwise(&n("conv.gate_c"), td, 2);
            b.linear(&n("conv.out_proj"), t, d, d, false, w);
        }
        b.pointwise(&n("residual1"), td, 2);
        b.norm(&n("ffn_norm"), td, d as u64);
        b.linear(&n("feed_forward.w1"), t, d, ff, false, w);
        b.pointwise(&n("feed_forward.silu"), (t * ff) as u64, 1);
        b.linear(&n("feed_forward.w3"), t, d, ff, false, w);
        b.pointwise(&n("feed_forward.mul"), (t * ff) as u64, 2);
        b.linear(&n("feed_forward.w2"), t, ff, d, false, w);
        b.pointwise(&n("residual2"), td, 2);
    }
    Ok((gh, gw, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::totals;

    #[test]
    fn mobilenet_300m_has_its_published_size() {
        let enc = EncoderConfig::preset("mobilenetv5_300m_enc").unwrap();
        let p = ProjectorConfig {
            vision_dim: 2048,
            hidden: 2048,
            text_dim: 2048,
            bias: true,
            downsample: 1,
            layer_norm: false,
            merge_blocks: false,
        };
        let (ops, tokens) = vision_ops(&enc, &p, 768, Bits::FP32).unwrap();
        assert_eq!(tokens, 256);
        let t = totals(&ops);
        // ~300M encoder parameters + the 8.4M connector, at 4 bytes (norms included).
        let params = t.weight_bytes / 4;
        assert!((290_000_000..330_000_000).contains(&params), "{params}");
        // 256 and 512 give the same 256 tokens (the adapter resizes to 16x16).
        assert_eq!(vision_ops(&enc, &p, 256, Bits::FP32).unwrap().1, 256);
    }

    #[test]
    fn vit_macs_follow_the_formula() {
        let v = VitConfig::preset("vit_300m_p14").unwrap();
        let mut b = Builder::new(Bits::W8A16);
        let (gh, _, _) = vit(&mut b, &v, 448).unwrap();
        assert_eq!(gh, 32);
        let (t, d, f) = (1024u64, 1024u64, 4096u64);
        let per_layer = 4 * t * d * d + 2 * t * d * f + 2 * t * t * d;
        let patch = t * 3 * 14 * 14 * d;
        assert_eq!(totals(&b.ops).macs, 24 * per_layer + patch);
    }
}
