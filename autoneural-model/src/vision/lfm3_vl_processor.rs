//! LFM3-VL's images as its processor prepares them (transformers' `Qwen2VLImageProcessor`,
//! which `Lfm3VlProcessor` uses): one image becomes one grid of patches, no tiles.
//!
//! - smart resize: both sides rounded (half to even) to multiples of `patch_size *
//!   merge_size`, then scaled down to at most `max_pixels` or up to at least `min_pixels`
//!   keeping the aspect ratio (`preprocessor_config.json`: `size.longest_edge` /
//!   `size.shortest_edge`, pixel counts);
//! - bicubic, antialiased resize of the 8-bit image, as PyTorch's uint8 kernel computes it
//!   ([`resize_antialias`]);
//! - rescale and normalise with CLIP's mean and std (fused as transformers fuses them);
//! - the frame repeated `temporal_patch_size` times, and patches flattened as
//!   `[channel, frame, row, column]`, listed in spatial-merge order ([`merge_order`]).
//!
//! In the prompt each image becomes `<|vision_start|>`, one `<|image_pad|>` per merged token
//! (`grid_h * grid_w / merge_size^2`), `<|vision_end|>`.

use std::path::Path;

use image::RgbImage;
use serde_json::{Map, Value};

use crate::checkpoint::json::{Fields, read_object};
use crate::error::Result;
use crate::images::PixelNorm;
use crate::vision::lfm3_vl::merge_order;
use crate::vision::resize_u8::{Filter, resize_antialias};

/// What `preprocessor_config.json` says about images.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lfm3VlProcessorConfig {
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub rescale_factor: f64,
    pub do_resize: bool,
    pub do_rescale: bool,
    pub do_normalize: bool,
}

/// One image as the tower takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lfm3VlImage {
    /// `[grid_h * grid_w, 3 * temporal_patch_size * patch_size^2]`, row-major.
    pub patches: Vec<f32>,
    pub grid_h: usize,
    pub grid_w: usize,
}

/// Qwen2-VL's `smart_resize`: `(height, width)` as multiples of `factor` within
/// `[min_pixels, max_pixels]`, the aspect ratio kept as closely as the multiples allow. (Its
/// Python refuses aspect ratios over 200; the same formula, applied here, gives such a strip
/// at least one block across.)
pub fn smart_resize(h: usize, w: usize, factor: usize, min_pixels: usize, max_pixels: usize) -> (usize, usize) {
    let (hf, wf, f) = (h.max(1) as f64, w.max(1) as f64, factor as f64);
    let mut hb = (hf / f).round_ties_even() * f;
    let mut wb = (wf / f).round_ties_even() * f;
    if hb * wb > max_pixels as f64 {
        let beta = (hf * wf / max_pixels as f64).sqrt();
        hb = f.max((hf / beta / f).floor() * f);
        wb = f.max((wf / beta / f).floor() * f);
    } else if hb * wb < min_pixels as f64 {
        let beta = (min_pixels as f64 / (hf * wf)).sqrt();
        hb = (hf * beta / f).ceil() * f;
        wb = (wf * beta / f).ceil() * f;
    }
    ((hb as usize).max(factor), (wb as usize).max(factor))
}

impl Lfm3VlProcessorConfig {
    /// `preprocessor_config.json`, or the `image_processor` of `processor_config.json`, in
    /// `dir`; transformers' defaults where neither exists.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        for (file, nested) in [("preprocessor_config.json", None), ("processor_config.json", Some("image_processor"))] {
            let path = dir.join(file);
            if !path.is_file() {
                continue;
            }
            let map = read_object(&path)?;
            let map = match nested {
                Some(key) => match map.get(key).and_then(Value::as_object) {
                    Some(inner) => inner.clone(),
                    None => continue,
                },
                None => map,
            };
            return Self::from_json(&path, &map);
        }
        Ok(Self::from_json(&dir.join("preprocessor_config.json"), &Map::new())?)
    }

    pub fn from_json(path: &Path, map: &Map<String, Value>) -> Result<Self> {
        let f = Fields::new(path, map);
        let size = f.object_opt("size")?;
        let size_field = |name: &str| -> Result<Option<usize>> {
            match size {
                Some(s) => Fields::new(path, s).usize_opt(&[name]),
                None => Ok(None),
            }
        };
        let triple = |name: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            match map.get(name).and_then(Value::as_array) {
                None => Ok(default),
                Some(v) if v.len() == 3 && v.iter().all(Value::is_number) => {
                    Ok(std::array::from_fn(|i| v[i].as_f64().unwrap_or(0.0) as f32))
                }
                Some(_) => Err(f.invalid(name, "expected three numbers")),
            }
        };
        if let Some(resample) = f.usize_opt(&["resample"])?
            && resample != 3
        {
            return Err(f.invalid("resample", format!("{resample} is not supported (LFM3-VL resizes bicubic, 3)")));
        }
        let config = Self {
            patch_size: f.usize_opt(&["patch_size"])?.unwrap_or(16),
            temporal_patch_size: f.usize_opt(&["temporal_patch_size"])?.unwrap_or(2),
            merge_size: f.usize_opt(&["merge_size"])?.unwrap_or(2),
            min_pixels: f.usize_opt(&["min_pixels"])?.or(size_field("shortest_edge")?).unwrap_or(56 * 56),
            max_pixels: f.usize_opt(&["max_pixels"])?.or(size_field("longest_edge")?).unwrap_or(28 * 28 * 1280),
            image_mean: triple("image_mean", [0.481_454_66, 0.457_827_5, 0.408_210_73])?,
            image_std: triple("image_std", [0.268_629_54, 0.261_302_58, 0.275_777_11])?,
            rescale_factor: f.f64_opt(&["rescale_factor"])?.unwrap_or(1.0 / 255.0),
            do_resize: f.bool_opt(&["do_resize"])?.unwrap_or(true),
            do_rescale: f.bool_opt(&["do_rescale"])?.unwrap_or(true),
            do_normalize: f.bool_opt(&["do_normalize"])?.unwrap_or(true),
        };
        config.check().map_err(|(field, message)| f.invalid(field, message))?;
        Ok(config)
    }

    /// `preprocessor_config.json` as transformers writes it for `Qwen2VLImageProcessor`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "image_processor_type": "Qwen2VLImageProcessor",
            "patch_size": self.patch_size,
            "temporal_patch_size": self.temporal_patch_size,
            "merge_size": self.merge_size,
            "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "rescale_factor": self.rescale_factor,
            "resample": 3,
            "do_resize": self.do_resize,
            "do_rescale": self.do_rescale,
            "do_normalize": self.do_normalize,
            "do_convert_rgb": true,
        })
    }

    /// Sizes within bounds, by field name.
    pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        for (name, v) in [
            ("patch_size", self.patch_size),
            ("temporal_patch_size", self.temporal_patch_size),
            ("merge_size", self.merge_size),
        ] {
            if !(1..=1024).contains(&v) {
                return Err((name, format!("{v} is not 1 to 1024")));
            }
        }
        let limit = crate::images::max_pixels() as usize;
        if self.min_pixels > self.max_pixels || self.max_pixels > limit {
            return Err((
                "size",
                format!("min_pixels {} to max_pixels {} (at most {limit})", self.min_pixels, self.max_pixels),
            ));
        }
        if self.image_std.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
            return Err(("image_std", format!("{:?} must be positive", self.image_std)));
        }
        Ok(())
    }

    /// Values per patch.
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// The resized `(height, width)` of an `h x w` image: smart resize, or without
    /// `do_resize` the image cropped to whole merge blocks (transformers would fail on it;
    /// one smaller than a block is resized up to one).
    pub fn resized(&self, h: usize, w: usize) -> (usize, usize) {
        let f = self.patch_size * self.merge_size;
        if !self.do_resize {
            return ((h / f).max(1) * f, (w / f).max(1) * f);
        }
        smart_resize(h, w, f, self.min_pixels, self.max_pixels)
    }

    /// Merged tokens (`<|image_pad|>`s) of an `h x w` image.
    pub fn tokens(&self, h: usize, w: usize) -> usize {
        let (rh, rw) = self.resized(h, w);
        (rh / self.patch_size) * (rw / self.patch_size) / (self.merge_size * self.merge_size)
    }

    /// The image resized as the processor resizes it (8-bit).
    pub fn resize(&self, rgb: &RgbImage) -> RgbImage {
        let (h, w) = (rgb.height() as usize, rgb.width() as usize);
        let (rh, rw) = self.resized(h, w);
        if (rh, rw) == (h, w) {
            return rgb.clone();
        }
        if !self.do_resize && rh <= h && rw <= w {
            return image::imageops::crop_imm(rgb, 0, 0, rw as u32, rh as u32).to_image();
        }
        resize_antialias(Filter::Bicubic, rgb, rw as u32, rh as u32)
    }

    /// The rescale and normalisation of 8-bit values.
    pub fn norm(&self) -> PixelNorm {
        PixelNorm::new(self.rescale_factor, self.do_rescale, self.do_normalize, self.image_mean, self.image_std)
    }

    /// transformers' `pixel_values` and grid of one image.
    pub fn process(&self, rgb: &RgbImage) -> Lfm3VlImage {
        let img = self.resize(rgb);
        let (rh, rw) = (img.height() as usize, img.width() as usize);
        let (p, m, t) = (self.patch_size, self.merge_size, self.temporal_patch_size);
        let norm = self.norm();
        let value = |c: usize, y: usize, x: usize| norm.value(img.get_pixel(x as u32, y as u32).0[c], c);
        let (gh, gw) = (rh / p, rw / p);
        let mut patches = Vec::with_capacity(gh * gw * self.patch_dim());
        for (row, col) in merge_order(gh, gw, m) {
            for c in 0..3 {
                for _ in 0..t {
                    for py in 0..p {
                        for px in 0..p {
                            patches.push(value(c, row * p + py, col * p + px));
                        }
                    }
                }
            }
        }
        Lfm3VlImage { patches, grid_h: gh, grid_w: gw }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_follows_qwen2_vl() {
        // 45 x 70 with 8-pixel blocks: 48 x 72 = 3456 pixels, within [256, 2560]? No: over
        // the maximum, so scaled by sqrt(45 * 70 / 2560) and floored to blocks: 40 x 56.
        assert_eq!(smart_resize(45, 70, 8, 256, 2560), (40, 56));
        // Python rounds half to even: 20 / 8 = 2.5 -> 2 blocks.
        assert_eq!(smart_resize(20, 100, 8, 0, 1 << 20), (16, 96));
        // Tiny images grow to the minimum.
        assert_eq!(smart_resize(3, 3, 8, 256, 2560), (16, 16));
        // A strip Python refuses (aspect 500) keeps one block across.
        assert_eq!(smart_resize(1, 500, 8, 0, 1 << 20), (8, 496));
    }
}
