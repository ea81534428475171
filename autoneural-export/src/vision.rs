//! The vision side as one static-shape ONNX graph, `vision_encoder.onnx`: pixels `[1, 3, S,
//! S]` (as the model's preprocessing leaves them) -> image features `[1, tokens, hidden]`
//! after the connector, ready to splice into `inputs_embeds` at the image-token positions.
//! SigLIP / SigLIP2 (LFM2-VL's tower) layer by layer, with LayerNormalization and its
//! position table resized for the static input; MobileNetV5 block by block as
//! `autoneural_model::vision` computes it (TF-"same" padding as explicit asymmetric pads,
//! batch norm or RMSNorm2d, tanh-GELU, layer scale, multi-query attention with strided keys
//! and values, the fusion adapter); then the connector (LFM2-VL's pixel-unshuffle and layer
//! norm when present, the MLP). Initializers carry the checkpoint's keys
//! (`vision_tower.blocks.1.0.pw_exp.conv.weight`).

use anyhow::{Result, bail};
use autoneural_model::connector::Projector;
use autoneural_model::nn::LayerNorm;
use autoneural_model::nn::conv_norm::{Conv2d, ConvNorm, LayerScale2d, Norm2d, conv_padding};
use autoneural_model::vision::blocks::{
    EdgeResidual, KvProjection, MobileAttention, MobileBlock, UniversalInvertedResidual,
};
use autoneural_model::vision::lfm3_vl::{Lfm3VlLayer, Lfm3VlTower, axial_rope};
use autoneural_model::vision::mobilenetv5::MultiScaleFusionAdapter;
use autoneural_model::vision::resize::bilinear_weights;
use autoneural_model::vision::siglip::{PatchEmbedding, SiglipVision, VitLayer};
use autoneural_model::vision::{MobileNetV5, NormKind, VisionEncoder};
use autoneural_model::vlm::VisionLanguageModel;
use burn::tensor::Tensor;

use crate::graph::{Attr, Build, DType, Graph, linear, values};
use crate::qdq::{self, Layout};

/// A value in the graph with its `[c, h, w]` (batch 1).
#[derive(Clone)]
struct Fm {
    name: String,
    c: usize,
    h: usize,
    w: usize,
}

fn conv(g: &mut Graph, x: &Fm, conv: &Conv2d, key: &str) -> Fm {
    conv_of(g, x, conv, key)
}

fn conv_of(g: &mut Graph, x: &Fm, conv: &Conv2d, key: &str) -> Fm {
    let w = conv.weight.val();
    let [out, in_g, kh, kw] = w.dims();
    let (pt, pb) = conv_padding(conv.pad, x.h, kh, conv.stride, conv.dilation);
    let (pl, pr) = conv_padding(conv.pad, x.w, kw, conv.stride, conv.dilation);
    let wkey = format!("{key}.weight");
    let input = qdq::activation(g, &wkey, &x.name);
    let weight = qdq::weight(g, &wkey, &[out, in_g, kh, kw], &values(w), Layout::Torch);
    let mut inputs = vec![input, weight];
    if let Some(b) = &conv.bias {
        inputs.push(g.weight(&format!("{key}.bias"), &[out], &values(b.val())));
    }
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let (s, d) = (conv.stride, conv.dilation);
    let name = g.op(
        "Conv",
        &inputs,
        vec![
            ("kernel_shape", Attr::Ints(vec![kh as i64, kw as i64])),
            ("strides", Attr::Ints(vec![s as i64; 2])),
            ("dilations", Attr::Ints(vec![d as i64; 2])),
            ("group", Attr::Int(conv.groups as i64)),
            ("pads", Attr::Ints(vec![pt as i64, pl as i64, pb as i64, pr as i64])),
        ],
    );
    let size = |n: usize, k: usize, p: usize| (n + p - d * (k - 1) - 1) / s + 1;
    Fm { name, c: out, h: size(x.h, kh, pt + pb), w: size(x.w, kw, pl + pr) }
}

/// A per-channel vector shaped `[c, 1, 1]` to broadcast over `[1, c, h, w]`.
fn channel_vector(g: &mut Graph, key: &str, v: Tensor<1>) -> String {
    let c = v.dims()[0];
    g.weight(key, &[c, 1, 1], &values(v))
}

fn norm(g: &mut Graph, x: &Fm, n: &Norm2d, key: &str) -> Fm {
    let name = match n.kind() {
        NormKind::Batch => {
            let (Some(bias), Some(mean), Some(var)) = (&n.bias, &n.running_mean, &n.running_var) else {
                unreachable!("a batch norm has its bias and running statistics")
            };
            let c = x.c;
            let w = g.weight(&format!("{key}.weight"), &[c], &values(n.weight.val()));
            let b = g.weight(&format!("{key}.bias"), &[c], &values(bias.val()));
            let m = g.weight(&format!("{key}.running_mean"), &[c], &values(mean.value()));
            let v = g.weight(&format!("{key}.running_var"), &[c], &values(var.value()));
            g.op("BatchNormalization", &[&x.name, &w, &b, &m, &v], vec![("epsilon", Attr::Float(n.eps as f32))])
        }
        NormKind::Rms => {
            let sq = g.mul(&x.name, &x.name);
            let axes = g.ints(&[1]);
            let mean = g.op("ReduceMean", &[&sq, &axes], vec![("keepdims", Attr::Int(1))]);
            let e = g.scalar(n.eps as f32);
            let var = g.add(&mean, &e);
            let root = g.op("Sqrt", &[&var], vec![]);
            let y = g.op("Div", &[&x.name, &root], vec![]);
            let w = channel_vector(g, &format!("{key}.weight"), n.weight.val());
            g.mul(&y, &w)
        }
    };
    Fm { name, ..x.clone() }
}

fn gelu(g: &mut Graph, x: &Fm) -> Fm {
    let name = g.op("Gelu", &[&x.name], vec![("approximate", Attr::Str("tanh".into()))]);
    Fm { name, ..x.clone() }
}

fn conv_norm(g: &mut Graph, x: &Fm, cn: &ConvNorm, key: &str) -> Fm {
    let y = conv(g, x, &cn.conv, &format!("{key}.conv"));
    let y = norm(g, &y, &cn.bn, &format!("{key}.bn"));
    if cn.act { gelu(g, &y) } else { y }
}

/// `y * gamma + skip` (either part optional).
fn scale_add(g: &mut Graph, y: Fm, scale: Option<&LayerScale2d>, key: &str, skip: Option<&Fm>) -> Fm {
    let mut y = y;
    if let Some(s) = scale {
        let gamma = channel_vector(g, &format!("{key}.layer_scale.gamma"), s.gamma.val());
        y.name = g.mul(&y.name, &gamma);
    }
    if let Some(s) = skip {
        y.name = g.add(&y.name, &s.name);
    }
    y
}

fn edge_residual(g: &mut Graph, x: &Fm, b: &EdgeResidual, key: &str) -> Fm {
    let y = conv(g, x, &b.conv_exp, &format!("{key}.conv_exp"));
    let y = norm(g, &y, &b.bn1, &format!("{key}.bn1"));
    let y = gelu(g, &y);
    let y = conv(g, &y, &b.conv_pwl, &format!("{key}.conv_pwl"));
    let y = norm(g, &y, &b.bn2, &format!("{key}.bn2"));
    scale_add(g, y, None, key, b.has_skip.then_some(x))
}

fn uir(g: &mut Graph, x: &Fm, b: &UniversalInvertedResidual, key: &str) -> Fm {
    let mut y = x.clone();
    if let Some(c) = &b.dw_start {
        y = conv_norm(g, &y, c, &format!("{key}.dw_start"));
    }
    y = conv_norm(g, &y, &b.pw_exp, &format!("{key}.pw_exp"));
    if let Some(c) = &b.dw_mid {
        y = conv_norm(g, &y, c, &format!("{key}.dw_mid"));
    }
    y = conv_norm(g, &y, &b.pw_proj, &format!("{key}.pw_proj"));
    if let Some(c) = &b.dw_end {
        y = conv_norm(g, &y, c, &format!("{key}.dw_end"));
    }
    scale_add(g, y, b.layer_scale.as_ref(), key, b.has_skip.then_some(x))
}

fn kv_projection(g: &mut Graph, x: &Fm, p: &KvProjection, key: &str) -> Fm {
    let mut y = x.clone();
    if let (Some(c), Some(n)) = (&p.down_conv, &p.norm) {
        y = conv(g, &y, c, &format!("{key}.down_conv"));
        y = norm(g, &y, n, &format!("{key}.norm"));
    }
    conv(g, &y, &p.proj, &format!("{key}.proj"))
}

/// `softmax(q kt / sqrt(head_dim)) v`, unmasked (every position sees every other).
fn attend(g: &mut Graph, q: &str, kt: &str, v: &str, head_dim: usize) -> String {
    let scores = g.matmul(q, kt);
    let scale = g.scalar((head_dim as f32).powf(-0.5));
    let scores = g.mul(&scores, &scale);
    let probs = g.op("Softmax", &[&scores], vec![("axis", Attr::Int(-1))]);
    g.matmul(&probs, v)
}

fn mobile_attention(g: &mut Graph, x: &Fm, b: &MobileAttention, key: &str) -> Fm {
    let a = &b.attn;
    let (nh, d) = (a.num_heads as i64, a.key_dim as i64);
    let hw = (x.h * x.w) as i64;
    let normed = norm(g, x, &b.norm, &format!("{key}.norm"));
    let q = conv(g, &normed, &a.query.proj, &format!("{key}.attn.query.proj"));
    let q = g.reshape(&q.name, &[1, nh, d, hw]);
    let q = g.transpose(&q, &[0, 1, 3, 2]);
    let q = g.reshape(&q, &[1, nh * hw, d]);
    let rows = |g: &mut Graph, t: &Fm| {
        let r = g.reshape(&t.name, &[1, t.c as i64, (t.h * t.w) as i64]);
        g.transpose(&r, &[0, 2, 1]) // [1, p, d]
    };
    let k = kv_projection(g, &normed, &a.key, &format!("{key}.attn.key"));
    let k = rows(g, &k);
    let v = kv_projection(g, &normed, &a.value, &format!("{key}.attn.value"));
    let v = rows(g, &v);
    let kt = g.transpose(&k, &[0, 2, 1]);
    let o = attend(g, &q, &kt, &v, d as usize); // [1, nh*hw, d]
    let o = g.reshape(&o, &[1, nh, hw, d]);
    let o = g.transpose(&o, &[0, 2, 1, 3]); // [1, hw, nh, d]
    let o = g.reshape(&o, &[1, x.h as i64, x.w as i64, nh * d]);
    let o = g.transpose(&o, &[0, 3, 1, 2]);
    let o = Fm { name: o, c: (nh * d) as usize, h: x.h, w: x.w };
    let y = conv(g, &o, &a.output.proj, &format!("{key}.attn.output.proj"));
    scale_add(g, y, b.layer_scale.as_ref(), key, b.has_skip.then_some(x))
}

fn msfa(g: &mut Graph, taps: Vec<Fm>, m: &MultiScaleFusionAdapter, key: &str) -> Result<Fm> {
    let (h, w) = (taps[0].h, taps[0].w);
    let mut resized = Vec::new();
    for t in taps {
        if t.h < h || t.w < w {
            // Nearest, source index floor(i * in / out), as `resize::nearest`.
            let sizes = g.ints(&[1, t.c as i64, h as i64, w as i64]);
            let name = g.op(
                "Resize",
                &[&t.name, "", "", &sizes],
                vec![
                    ("mode", Attr::Str("nearest".into())),
                    ("coordinate_transformation_mode", Attr::Str("asymmetric".into())),
                    ("nearest_mode", Attr::Str("floor".into())),
                ],
            );
            resized.push(Fm { name, h, w, ..t });
        } else {
            resized.push(t);
        }
    }
    let c: usize = resized.iter().map(|t| t.c).sum();
    let names: Vec<&str> = resized.iter().map(|t| t.name.as_str()).collect();
    let x = Fm { name: g.concat(&names, 1), c, h, w };
    let x = uir(g, &x, &m.ffn, &format!("{key}.ffn"));
    let r = m.output_resolution;
    let x = if (h, w) == (r, r) {
        x
    } else if h % r != 0 || w % r != 0 {
        // Bilinear (align_corners=False) as two MatMuls with the model's own constant
        // interpolation matrices: exactly `resize::bilinear`, on any runtime.
        let wt = bilinear_weights(w, r, false);
        let ht = bilinear_weights(h, r, false);
        let transposed = |m: Vec<f32>, n_in: usize| -> Vec<f32> {
            (0..n_in * r).map(|k| m[(k % r) * n_in + k / r]).collect() // [in, out]
        };
        let rw = g.weight(&format!("{key}.resize_w"), &[w, r], &transposed(wt, w));
        let rh = g.weight(&format!("{key}.resize_h"), &[h, r], &transposed(ht, h));
        let y = g.matmul(&x.name, &rw); // [1, c, h, r]
        let y = g.transpose(&y, &[0, 1, 3, 2]);
        let y = g.matmul(&y, &rh); // [1, c, r(w), r(h)]
        let name = g.transpose(&y, &[0, 1, 3, 2]);
        Fm { name, h: r, w: r, ..x }
    } else {
        let (fh, fw) = (h / r, w / r);
        let name = g.op(
            "AveragePool",
            &[&x.name],
            vec![
                ("kernel_shape", Attr::Ints(vec![fh as i64, fw as i64])),
                ("strides", Attr::Ints(vec![fh as i64, fw as i64])),
            ],
        );
        Fm { name, h: r, w: r, ..x }
    };
    Ok(norm(g, &x, &m.norm, &format!("{key}.norm")))
}

fn mobilenet(g: &mut Graph, pixels: Fm, m: &MobileNetV5, key: &str) -> Result<Fm> {
    let mut x = conv_norm(g, &pixels, &m.conv_stem, &format!("{key}.conv_stem"));
    let mut taps = Vec::new();
    if m.msfa_taps.contains(&0) {
        taps.push(x.clone());
    }
    for (s, stage) in m.blocks.iter().enumerate() {
        for (i, block) in stage.iter().enumerate() {
            let k = format!("{key}.blocks.{s}.{i}");
            x = match block {
                MobileBlock::EdgeResidual(b) => edge_residual(g, &x, b, &k),
                MobileBlock::UniversalInvertedResidual(b) => uir(g, &x, b, &k),
                MobileBlock::MobileAttention(b) => mobile_attention(g, &x, b, &k),
            };
        }
        if m.msfa_taps.contains(&(s + 1)) {
            taps.push(x.clone());
        }
    }
    msfa(g, taps, &m.msfa, &format!("{key}.msfa"))
}

/// ONNX LayerNormalization over the last axis (biased variance, as Burn's and PyTorch's).
fn layer_norm(g: &mut Graph, x: &str, ln: &LayerNorm, key: &str) -> String {
    let d = ln.weight.dims()[0];
    let w = g.weight(&format!("{key}.weight"), &[d], &values(ln.weight.val()));
    let b = g.weight(&format!("{key}.bias"), &[d], &values(ln.bias.val()));
    g.op("LayerNormalization", &[x, &w, &b], vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(ln.eps as f32))])
}

/// One pre-norm encoder layer on `[1, t, d]`: attention, then the tanh-GELU MLP.
fn vit_layer(g: &mut Graph, x: &str, l: &VitLayer, t: usize, key: &str) -> String {
    let a = &l.self_attn;
    let d = a.q_proj.weight.dims()[0];
    let (nh, hd) = (a.num_heads as i64, (d / a.num_heads) as i64);
    let h = layer_norm(g, x, &l.layer_norm1, &format!("{key}.layer_norm1"));
    let heads = |g: &mut Graph, proj, name: &str, perm: &[i64]| {
        let y = linear(g, &h, proj, &format!("{key}.self_attn.{name}"));
        let y = g.reshape(&y, &[1, t as i64, nh, hd]);
        g.transpose(&y, perm)
    };
    let q = heads(g, &a.q_proj, "q_proj", &[0, 2, 1, 3]); // [1, nh, t, hd]
    let kt = heads(g, &a.k_proj, "k_proj", &[0, 2, 3, 1]); // [1, nh, hd, t]
    let v = heads(g, &a.v_proj, "v_proj", &[0, 2, 1, 3]);
    let o = attend(g, &q, &kt, &v, hd as usize);
    let o = g.transpose(&o, &[0, 2, 1, 3]);
    let o = g.reshape(&o, &[1, t as i64, nh * hd]);
    let o = linear(g, &o, &a.out_proj, &format!("{key}.self_attn.out_proj"));
    let x = g.add(x, &o);
    let h = layer_norm(g, &x, &l.layer_norm2, &format!("{key}.layer_norm2"));
    let h = linear(g, &h, &l.mlp.fc1, &format!("{key}.mlp.fc1"));
    let h = g.op("Gelu", &[&h], vec![("approximate", Attr::Str("tanh".into()))]);
    let h = linear(g, &h, &l.mlp.fc2, &format!("{key}.mlp.fc2"));
    g.add(&x, &h)
}

/// SigLIP / SigLIP2 on `[1, 3, s, s]` -> tokens `[1, gh*gw, d]` (and the grid). The
/// position table is stored already resized to this grid (the resize depends only on the
/// static input size), under `<key>.embeddings.position_embedding.weight` when no resize
/// is needed and `...weight.resized` otherwise.
fn vit(g: &mut Graph, pixels: &Fm, v: &SiglipVision, key: &str) -> (String, usize, usize) {
    let m = &v.vision_model;
    let p = m.embeddings.patch_size;
    let (gh, gw) = (pixels.h / p, pixels.w / p);
    let t = gh * gw;
    let ek = format!("{key}.vision_model.embeddings");
    let patches = match &m.embeddings.patch_embedding {
        PatchEmbedding::Linear(lin) => {
            // [1, c, gh, p, gw, p] -> [1, gh, gw, p, p, c]: the processor's patch order.
            let c = pixels.c as i64;
            let x = g.slice(&pixels.name, &[0, 0], &[(gh * p) as i64, (gw * p) as i64], &[2, 3]);
            let x = g.reshape(&x, &[1, c, gh as i64, p as i64, gw as i64, p as i64]);
            let x = g.transpose(&x, &[0, 2, 4, 3, 5, 1]);
            let x = g.reshape(&x, &[1, t as i64, (p * p) as i64 * c]);
            linear(g, &x, lin, &format!("{ek}.patch_embedding"))
        }
        PatchEmbedding::Conv(c) => {
            let y = conv(g, pixels, c, &format!("{ek}.patch_embedding"));
            let y = g.reshape(&y.name, &[1, y.c as i64, t as i64]);
            g.transpose(&y, &[0, 2, 1])
        }
    };
    let table = m.embeddings.positions(gh, gw);
    let [_, d] = table.dims();
    let n = m.embeddings.position_embedding.weight.dims()[0];
    let pkey = format!("{ek}.position_embedding.weight{}", if n == t { "" } else { ".resized" });
    let positions = g.weight(&pkey, &[t, d], &values(table));
    let mut x = g.add(&patches, &positions);
    for (i, layer) in m.encoder.layers.iter().enumerate() {
        x = vit_layer(g, &x, layer, t, &format!("{key}.vision_model.encoder.layers.{i}"));
    }
    (layer_norm(g, &x, &m.post_layernorm, &format!("{key}.vision_model.post_layernorm")), gh, gw)
}

/// LFM3-VL's tower on `[1, 3, s, s]` -> tokens `[1, gh*gw, d]` in spatial-merge order (and
/// the grid), as `autoneural_model::vision::lfm3_vl` computes it: patches cut by reshapes
/// (each frame repeated over the temporal patch), the patch embedding and RMSNorm, then gated
/// depthwise convolutions on the grid and bidirectional GQA with axial RoPE (its tables are
/// initializers: the input size is static), each with a SwiGLU.
fn lfm3_vl_tower(g: &mut Graph, pixels: &Fm, t: &Lfm3VlTower, key: &str) -> Result<(String, usize, usize)> {
    let (p, m, tp) = (t.patch_size, t.merge, t.temporal_patch_size);
    let (gh, gw, c) = (pixels.h / p, pixels.w / p, pixels.c);
    if gh == 0 || gw == 0 || !gh.is_multiple_of(m) || !gw.is_multiple_of(m) || gh * p != pixels.h || gw * p != pixels.w
    {
        bail!(
            "LFM3-VL's tower cuts {p}-pixel patches in {m}x{m} blocks: {}x{} images do not divide",
            pixels.h,
            pixels.w
        );
    }
    let n = (gh * gw) as i64;
    let ii = |v: usize| v as i64;
    // [1, c, gh/m, m, p, gw/m, m, p] -> [gh/m, gw/m, m, m, c, p, p] -> [n, c, 1, p*p]
    let x = g.reshape(&pixels.name, &[1, ii(c), ii(gh / m), ii(m), ii(p), ii(gw / m), ii(m), ii(p)]);
    let x = g.transpose(&x, &[0, 2, 5, 3, 6, 1, 4, 7]);
    let x = g.reshape(&x, &[n, ii(c), 1, ii(p * p)]);
    let frames: Vec<&str> = std::iter::repeat_n(x.as_str(), tp).collect();
    let x = g.concat(&frames, 2);
    let x = g.reshape(&x, &[1, n, ii(c * tp * p * p)]);
    let x = linear(g, &x, &t.patchifier, &format!("{key}.patchifier"));
    let rms = |g: &mut Graph, x: &str, norm: &autoneural_model::nn::RmsNorm, name: &str| {
        let [d] = norm.weight.dims();
        let w = g.weight(name, &[d], &values(norm.weight.val()));
        g.rms_norm(x, &w, norm.eps)
    };
    let mut x = rms(g, &x, &t.embedding_norm, &format!("{key}.embedding_norm.weight"));
    let mut tables: Option<(String, String)> = None;
    for (i, layer) in t.layers.iter().enumerate() {
        let lk = format!("{key}.layers.{i}");
        let (operator_norm, ffn_norm, mlp) = match layer {
            Lfm3VlLayer::Conv(l) => (&l.operator_norm, &l.ffn_norm, &l.feed_forward),
            Lfm3VlLayer::Attention(l) => (&l.operator_norm, &l.ffn_norm, &l.feed_forward),
        };
        let h = rms(g, &x, operator_norm, &format!("{lk}.operator_norm.weight"));
        let y = match layer {
            Lfm3VlLayer::Conv(l) => {
                let conv = &l.conv;
                let d = conv.out_proj.weight.dims()[1];
                let bcx = linear(g, &h, &conv.in_proj, &format!("{lk}.conv.in_proj"));
                let parts = g.op_n("Split", &[&bcx], vec![("axis", Attr::Int(2)), ("num_outputs", Attr::Int(3))], 3);
                let v = g.mul(&parts[0], &parts[2]);
                // merge order -> the image [1, d, gh, gw], through the depthwise conv, and back
                let v = g.reshape(&v, &[1, ii(gh / m), ii(gw / m), ii(m), ii(m), ii(d)]);
                let v = g.transpose(&v, &[0, 5, 1, 3, 2, 4]);
                let v = g.reshape(&v, &[1, ii(d), ii(gh), ii(gw)]);
                let y = conv_of(
                    g,
                    &Fm { name: v, c: d, h: gh, w: gw },
                    &conv.spatial_conv,
                    &format!("{lk}.conv.spatial_conv"),
                );
                let y = g.reshape(&y.name, &[1, ii(d), ii(gh / m), ii(m), ii(gw / m), ii(m)]);
                let y = g.transpose(&y, &[0, 2, 4, 3, 5, 1]);
                let y = g.reshape(&y, &[1, n, ii(d)]);
                let y = g.mul(&parts[1], &y);
                linear(g, &y, &conv.out_proj, &format!("{lk}.conv.out_proj"))
            }
            Lfm3VlLayer::Attention(l) => {
                let a = &l.self_attn;
                let (h_, kvh, hd) = (ii(a.num_heads), ii(a.num_kv_heads), ii(a.head_dim));
                let (cos, sin) = tables
                    .get_or_insert_with(|| {
                        let (cos, sin) =
                            axial_rope(gh, gw, m, a.head_dim, t.rope_theta, &a.q_proj.weight.val().device());
                        let shape = [gh * gw, a.head_dim];
                        (
                            g.weight(&format!("{key}.rope.cos"), &shape, &values(cos)),
                            g.weight(&format!("{key}.rope.sin"), &shape, &values(sin)),
                        )
                    })
                    .clone();
                let sk = format!("{lk}.self_attn");
                let heads = |g: &mut Graph, proj, name: &str, nh: i64, norm: Option<&autoneural_model::nn::RmsNorm>| {
                    let y = linear(g, &h, proj, &format!("{sk}.{name}"));
                    let y = g.reshape(&y, &[1, n, nh, hd]);
                    let y = match norm {
                        Some(nm) => {
                            let nn = if name == "q_proj" { "q_layernorm" } else { "k_layernorm" };
                            let w = g.weight(&format!("{sk}.{nn}.weight"), &[hd as usize], &values(nm.weight.val()));
                            g.rms_norm(&y, &w, nm.eps)
                        }
                        None => y,
                    };
                    g.transpose(&y, &[0, 2, 1, 3]) // [1, nh, n, hd]
                };
                let q = heads(g, &a.q_proj, "q_proj", h_, Some(&a.q_layernorm));
                let k = heads(g, &a.k_proj, "k_proj", kvh, Some(&a.k_layernorm));
                let v = heads(g, &a.v_proj, "v_proj", kvh, None);
                let q = crate::lm::rope(g, &q, &cos, &sin, hd);
                let k = crate::lm::rope(g, &k, &cos, &sin, hd);
                // query heads sharing a KV head stacked on the row axis
                let q = g.reshape(&q, &[1, kvh, (h_ / kvh) * n, hd]);
                let kt = g.transpose(&k, &[0, 1, 3, 2]);
                let o = attend(g, &q, &kt, &v, a.head_dim);
                let o = g.reshape(&o, &[1, h_, n, hd]);
                let o = g.transpose(&o, &[0, 2, 1, 3]);
                let o = g.reshape(&o, &[1, n, h_ * hd]);
                linear(g, &o, &a.out_proj, &format!("{sk}.out_proj"))
            }
        };
        x = g.add(&x, &y);
        let h = rms(g, &x, ffn_norm, &format!("{lk}.ffn_norm.weight"));
        let gate = linear(g, &h, &mlp.w1, &format!("{lk}.feed_forward.w1"));
        let gate = g.silu(&gate);
        let up = linear(g, &h, &mlp.w3, &format!("{lk}.feed_forward.w3"));
        let inner = g.mul(&gate, &up);
        let down = linear(g, &inner, &mlp.w2, &format!("{lk}.feed_forward.w2"));
        x = g.add(&x, &down);
    }
    Ok((x, gh, gw))
}

/// The connector on tokens `[1, gh*gw, c]`: LFM2-VL's pixel-unshuffle and layer norm when
/// it has them, LFM3-VL's per-token layer norm and merge blocks, then Linear -> GELU (erf)
/// -> Linear.
fn connector(g: &mut Graph, tokens: &str, gh: usize, gw: usize, p: &Projector, key: &str) -> Result<String> {
    let f = p.downsample;
    let mut x = tokens.to_string();
    if p.merge_blocks {
        if let Some(ln) = &p.layer_norm {
            x = layer_norm(g, &x, ln, &format!("{key}.layer_norm"));
        }
        let k = f * f;
        let c = p.linear_1.weight.dims()[0] / k;
        x = g.reshape(&x, &[1, (gh * gw / k) as i64, (k * c) as i64]);
        let h = linear(g, &x, &p.linear_1, &format!("{key}.linear_1"));
        let h = g.op("Gelu", &[&h], vec![]);
        return Ok(linear(g, &h, &p.linear_2, &format!("{key}.linear_2")));
    }
    if f > 1 {
        if !gh.is_multiple_of(f) || !gw.is_multiple_of(f) {
            bail!("the connector pixel-unshuffles by {f}, which does not divide the {gh}x{gw} token grid");
        }
        let c = p.linear_1.weight.dims()[0] / (f * f);
        let (a, b, f, c) = ((gh / f) as i64, (gw / f) as i64, f as i64, c as i64);
        // out[a, b, (s*f + r)*C + c] = in[f*a + s, f*b + r, c]
        x = g.reshape(&x, &[1, a, f, b, f, c]);
        x = g.transpose(&x, &[0, 1, 3, 2, 4, 5]);
        x = g.reshape(&x, &[1, a * b, f * f * c]);
    }
    if let Some(ln) = &p.layer_norm {
        x = layer_norm(g, &x, ln, &format!("{key}.layer_norm"));
    }
    let h = linear(g, &x, &p.linear_1, &format!("{key}.linear_1"));
    let h = g.op("Gelu", &[&h], vec![]);
    Ok(linear(g, &h, &p.linear_2, &format!("{key}.linear_2")))
}

/// Whether [`vision_graph`] can write `model`'s encoder and connector (checked before any
/// file is written).
pub fn check_supported(model: &VisionLanguageModel) -> Result<()> {
    if matches!(model.vision_tower, VisionEncoder::Lfm3Vl(_))
        && !matches!(model.config.preprocess, autoneural_model::images::Preprocess::Fixed { .. })
    {
        bail!(
            "LFM3-VL's processor keeps each image's own size, which a static graph cannot take: its tower exports \
             at a fixed size from an AutoNeural checkpoint (images resized to vision_config.image_size)"
        );
    }
    let s = model.config.encoder.image_size();
    let (gh, gw, _) = model.config.encoder.token_grid(s, s);
    let f = model.multi_modal_projector.downsample;
    if f > 1 && (!gh.is_multiple_of(f) || !gw.is_multiple_of(f)) {
        bail!("the connector pixel-unshuffles by {f}, which does not divide the {gh}x{gw} token grid at {s}x{s}");
    }
    Ok(())
}

/// `vision_encoder.onnx` of `model`: pixels `[1, 3, S, S]` -> `image_features [1, tokens,
/// hidden]`.
pub fn vision_graph(model: &VisionLanguageModel, build: &Build) -> Result<Graph> {
    check_supported(model)?;
    let s = model.config.encoder.image_size();
    let mut g = Graph::with("vision_encoder", build);
    let pixels = Fm { name: g.input("pixels", DType::Float32, &[1, 3, s, s]), c: 3, h: s, w: s };
    let (t, gh, gw) = match &model.vision_tower {
        VisionEncoder::MobileNetV5(m) => {
            let y = mobilenet(&mut g, pixels, m, "vision_tower")?;
            let t = g.reshape(&y.name, &[1, y.c as i64, (y.h * y.w) as i64]);
            (g.transpose(&t, &[0, 2, 1]), y.h, y.w)
        }
        VisionEncoder::Vit(v) => vit(&mut g, &pixels, v, "vision_tower"),
        VisionEncoder::Lfm3Vl(t) => lfm3_vl_tower(&mut g, &pixels, t, "vision_tower")?,
    };
    let p = &model.multi_modal_projector;
    let features = connector(&mut g, &t, gh, gw, p, "multi_modal_projector")?;
    let tokens = (gh / p.downsample) * (gw / p.downsample);
    let hidden = model.language.config.hidden_size;
    g.output(&features, "image_features", DType::Float32, &[1, tokens, hidden]);
    Ok(g)
}
