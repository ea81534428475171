//! Antialiased bilinear resizing of 8-bit RGB images, with the integer arithmetic of
//! PyTorch's uint8 kernel (`F.interpolate(uint8, mode="bilinear", antialias=True)` on CPU,
//! itself a port of Pillow-SIMD's `ImagingResample`). transformers' torchvision image
//! processors (LFM2-VL's among them) resize the decoded uint8 image this way, so computing it
//! bit for bit is what makes our pixel values equal to theirs rather than merely close.
//!
//! The resize is separable: a horizontal pass (when the width changes) into an 8-bit buffer,
//! then a vertical pass (when the height changes). Along an axis of `input -> output` pixels:
//! - `scale = input / output`; the triangle filter is widened to `support = max(scale, 1)`;
//! - output `i` is centred at `scale * (i + 0.5)` and reads source pixels
//!   `[trunc(center - support + 0.5), trunc(center + support + 0.5))` (clipped to the image),
//!   weighted `max(0, 1 - |j - center + 0.5| / support)` and normalised to sum to 1 (in f64);
//! - the weights become fixed point with `precision` fraction bits, the largest precision
//!   (at most 22) for which twice the largest weight still fits in int16;
//!   `w_int = trunc(w * 2^precision + 0.5)`;
//! - `out = clamp((2^(precision - 1) + sum(pixel * w_int)) >> precision, 0, 255)`.
//!
//! The intermediate rounding to 8 bits after the first pass and the dynamic precision are
//! both PyTorch's (Pillow uses a fixed 22 bits, which rounds differently now and then).
//! torchvision takes this path on CPUs with AVX2 or AVX-512 and on ARM; elsewhere it resizes
//! in f32 and rounds once, which differs by at most one level on some pixels.

use image::RgbImage;

/// The filter taps of one axis: output `i` reads `len[i]` source pixels from `start[i]`
/// with the fixed-point weights `weights[i * stride..]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Taps {
    pub start: Vec<usize>,
    pub len: Vec<usize>,
    pub stride: usize,
    pub weights: Vec<i32>,
    pub precision: u32,
}

/// The interpolation filter of an antialiased resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// The triangle `max(0, 1 - |x|)` (interp_size 2).
    Bilinear,
    /// Keys' cubic with `a = -0.5`, as PyTorch's and Pillow's `aa_filter` (interp_size 4).
    /// Qwen2-VL's image processor (LFM3-VL's) resizes this way.
    Bicubic,
}

impl Filter {
    fn half_size(self) -> f64 {
        match self {
            Self::Bilinear => 1.0,
            Self::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Self::Bilinear => (1.0 - x).max(0.0),
            Self::Bicubic => {
                let a = -0.5;
                if x < 1.0 {
                    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
                } else {
                    0.0
                }
            }
        }
    }
}

/// PyTorch's `_compute_index_ranges_int16_weights` for bilinear, antialiased,
/// `align_corners=False`, no explicit scale.
pub fn taps(input: usize, output: usize) -> Taps {
    taps_of(Filter::Bilinear, input, output)
}

/// [`taps`] for `filter`: its support is `interp_size / 2`, times the scale when
/// downscaling.
pub fn taps_of(filter: Filter, input: usize, output: usize) -> Taps {
    let scale = input as f64 / output as f64;
    let support = if scale >= 1.0 { filter.half_size() * scale } else { filter.half_size() };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let stride = support.ceil() as usize * 2 + 1;
    let mut float = vec![0f64; output * stride];
    let mut start = Vec::with_capacity(output);
    let mut len = Vec::with_capacity(output);
    let mut wt_max = 0f64;
    for i in 0..output {
        let center = scale * (i as f64 + 0.5);
        // C++ `static_cast<int64_t>` truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xsize = (((center + support + 0.5) as i64).min(input as i64) - xmin).clamp(0, stride as i64) as usize;
        let row = &mut float[i * stride..i * stride + xsize];
        let mut total = 0.0;
        for (j, w) in row.iter_mut().enumerate() {
            *w = filter.weight(((j as i64 + xmin) as f64 - center + 0.5) * invscale);
            total += *w;
        }
        if total != 0.0 {
            for w in row.iter_mut() {
                *w /= total;
                wt_max = wt_max.max(*w);
            }
        }
        start.push(xmin as usize);
        len.push(xsize);
    }
    let mut precision = 0u32;
    while precision < 22 {
        if (0.5 + wt_max * (1u64 << (precision + 1)) as f64) as i64 >= 1 << 15 {
            break;
        }
        precision += 1;
    }
    let one = (1u64 << precision) as f64;
    let weights = float
        .iter()
        .map(|&w| {
            let v = w * one;
            (if v < 0.0 { -0.5 + v } else { 0.5 + v }) as i32
        })
        .collect();
    Taps { start, len, stride, weights, precision }
}

/// One output value from `len` source values `at(k)` (k = 0..len).
#[inline]
fn convolve(taps: &Taps, i: usize, at: impl Fn(usize) -> u8) -> u8 {
    let w = &taps.weights[i * taps.stride..i * taps.stride + taps.len[i]];
    let mut acc: i32 = 1 << (taps.precision - 1);
    for (k, &wk) in w.iter().enumerate() {
        acc += at(k) as i32 * wk;
    }
    (acc >> taps.precision).clamp(0, 255) as u8
}

/// Resizes `img` to `out_w x out_h` as PyTorch resizes a uint8 CHW image (see the module
/// docs). Equal sizes return a copy.
pub fn resize_bilinear_antialias(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    resize_antialias(Filter::Bilinear, img, out_w, out_h)
}

/// [`resize_bilinear_antialias`] with `filter`: PyTorch's uint8 bicubic (torchvision passes
/// uint8 images to it natively on every CPU) is the same fixed-point algorithm with Keys'
/// cubic, whose negative lobes the final clamp absorbs.
pub fn resize_antialias(filter: Filter, img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    let src = img.as_raw();
    // Horizontal pass: [h, w, 3] -> [h, ow, 3].
    let horizontal;
    let (mid, mid_w): (&[u8], usize) = if ow != w {
        let t = taps_of(filter, w, ow);
        let mut out = vec![0u8; h * ow * 3];
        for y in 0..h {
            let row = &src[y * w * 3..(y + 1) * w * 3];
            for x in 0..ow {
                let s = t.start[x];
                for c in 0..3 {
                    out[(y * ow + x) * 3 + c] = convolve(&t, x, |k| row[(s + k) * 3 + c]);
                }
            }
        }
        horizontal = out;
        (&horizontal, ow)
    } else {
        (src, w)
    };
    // Vertical pass: [h, ow, 3] -> [oh, ow, 3].
    let out = if oh != h {
        let t = taps_of(filter, h, oh);
        let mut out = vec![0u8; oh * mid_w * 3];
        for y in 0..oh {
            let s = t.start[y];
            for x in 0..mid_w * 3 {
                out[y * mid_w * 3 + x] = convolve(&t, y, |k| mid[(s + k) * mid_w * 3 + x]);
            }
        }
        out
    } else {
        mid.to_vec()
    };
    RgbImage::from_raw(out_w, out_h, out).expect("buffer sized for the output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_fixed_point_triangles() {
        // Halving: each output reads 4 pixels (support 2) weighted 1/8, 3/8, 3/8, 1/8. The
        // largest weight is the border's 3/7, so 16 fraction bits fit int16 twice over.
        let t = taps(8, 4);
        assert_eq!(t.precision, 16);
        assert_eq!((t.start[1], t.len[1]), (1, 4));
        let one = 1 << 16;
        assert_eq!(&t.weights[t.stride..t.stride + 4], &[one / 8, 3 * one / 8, 3 * one / 8, one / 8]);
        // The first output's window is clipped at the border and renormalised: 3/7, 3/7, 1/7.
        assert_eq!(&t.weights[..3], &[28087, 28087, 9362]);
        // Upscaling keeps support 1: two taps.
        let t = taps(4, 8);
        assert!(t.len.iter().all(|&n| n <= 2));
    }

    #[test]
    fn constant_images_stay_constant() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([200, 17, 255]));
        for (w, h) in [(16, 9), (80, 51), (37, 5), (3, 23)] {
            let out = resize_bilinear_antialias(&img, w, h);
            assert!(out.pixels().all(|p| p.0 == [200, 17, 255]), "{w}x{h}");
        }
    }

    #[test]
    fn matches_pytorch_on_a_ramp() {
        // torch.nn.functional.interpolate(torch.arange(10, dtype=torch.uint8).mul(25)
        //     .view(1, 1, 1, 10).expand(1, 3, 1, 10), size=(1, 4), mode="bilinear",
        //     antialias=True) -> [25, 81, 144, 200]
        let mut img = RgbImage::new(10, 1);
        for x in 0..10 {
            img.put_pixel(x, 0, image::Rgb([(x * 25) as u8; 3]));
        }
        let out = resize_bilinear_antialias(&img, 4, 1);
        let got: Vec<u8> = (0..4).map(|x| out.get_pixel(x, 0).0[0]).collect();
        assert_eq!(got, vec![25, 81, 144, 200]);
    }
}
