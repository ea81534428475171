//! Images in: decode (PNG, JPEG, WebP), apply EXIF orientation, convert to RGB, resize and
//! scale the way each checkpoint format's processor does.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::{Device, Tensor, TensorData};
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::error::{ModelError, Result};

/// A decoded RGB image and where it came from (for error messages).
#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub path: PathBuf,
    pub rgb: RgbImage,
}

fn image_error(path: &Path, message: impl std::fmt::Display) -> ModelError {
    ModelError::Image { path: path.to_path_buf(), message: message.to_string() }
}

/// The most pixels an image may have, by default: 64 MP (8000 x 8000), as PIL's
/// decompression-bomb guard has ~89 MP. Pixels beyond it are refused before they are
/// allocated: a few kilobytes of PNG can declare gigabytes.
pub const DEFAULT_MAX_PIXELS: u64 = 64_000_000;
/// The variable that sets the limit when `--max-image-pixels` does not.
pub const MAX_PIXELS_ENV: &str = "AUTONEURAL_MAX_IMAGE_PIXELS";
static MAX_PIXELS: AtomicU64 = AtomicU64::new(0);

/// Sets the pixel limit for this process (`--max-image-pixels`).
pub fn set_max_pixels(pixels: u64) {
    MAX_PIXELS.store(pixels.max(1), Ordering::Relaxed);
}

/// The pixel limit: as set, else `AUTONEURAL_MAX_IMAGE_PIXELS`, else [`DEFAULT_MAX_PIXELS`].
pub fn max_pixels() -> u64 {
    match MAX_PIXELS.load(Ordering::Relaxed) {
        0 => std::env::var(MAX_PIXELS_ENV).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(DEFAULT_MAX_PIXELS),
        n => n,
    }
}

/// Decodes `path` (format sniffed from the bytes), turned upright by its EXIF orientation,
/// grayscale expanded and alpha dropped (as PIL's `convert("RGB")`). Only regular files
/// under 256 MiB are read, and images over [`max_pixels`] are refused before decoding.
pub fn load_image(path: &Path) -> Result<LoadedImage> {
    let bytes = autoneural_io::read::read(path, autoneural_io::read::IMAGE)?;
    decode_image(bytes, path)
}

/// Decodes an encoded image held in memory (a Parquet image cell, a WebDataset member);
/// `name` says where it came from, for messages. The same checks as [`load_image`].
pub fn decode_image(bytes: impl AsRef<[u8]>, name: &Path) -> Result<LoadedImage> {
    let path = name;
    let bytes = bytes.as_ref();
    if bytes.len() as u64 > autoneural_io::read::IMAGE.limit {
        return Err(image_error(path, format!("{} bytes, more than an encoded image may have", bytes.len())));
    }
    let format = image::guess_format(bytes)
        .map_err(|_| image_error(path, "not a PNG, JPEG or WebP image (unrecognised bytes)"))?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP) {
        return Err(image_error(path, format!("{format:?} images are not supported (PNG, JPEG and WebP are)")));
    }
    let reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut decoder = reader.into_decoder().map_err(|e| image_error(path, e))?;
    let (w, h) = decoder.dimensions();
    let limit = max_pixels();
    if u64::from(w) * u64::from(h) > limit {
        return Err(image_error(
            path,
            format!(
                "{w}x{h} is {} pixels, more than the limit of {limit} (a decompression bomb?); if the image is \
                 genuine, raise the limit with --max-image-pixels or {MAX_PIXELS_ENV}",
                u64::from(w) * u64::from(h)
            ),
        ));
    }
    let orientation = decoder.orientation().map_err(|e| image_error(path, e))?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| image_error(path, e))?;
    img.apply_orientation(orientation);
    if img.width() == 0 || img.height() == 0 {
        return Err(image_error(path, "image has no pixels"));
    }
    Ok(LoadedImage { path: path.to_path_buf(), rgb: img.to_rgb8() })
}

/// How a format turns an image into encoder input.
#[derive(Debug, Clone, PartialEq)]
pub enum Preprocess {
    /// Resize to `size x size` (bilinear), then `(x/255 - mean) / std`.
    Fixed { size: usize, mean: [f32; 3], std: [f32; 3] },
    /// LFM2-VL single tile: keep the aspect ratio, sides multiples of `patch * downsample`,
    /// tokens (after unshuffle) within `[min_tokens, max_tokens]`.
    SmartResize { patch: usize, downsample: usize, min_tokens: usize, max_tokens: usize, mean: [f32; 3], std: [f32; 3] },
}

fn round_by(x: f64, f: usize) -> usize {
    // Python's round(): half to even.
    (x / f as f64).round_ties_even() as usize * f
}

/// LFM2-VL's `smart_resize` (height, width) for one tile.
pub fn smart_resize(
    h: usize,
    w: usize,
    patch: usize,
    downsample: usize,
    min_tokens: usize,
    max_tokens: usize,
) -> (usize, usize) {
    let f = patch * downsample;
    let min_px = (min_tokens * patch * patch * downsample * downsample) as f64;
    let max_px = (max_tokens * patch * patch * downsample * downsample) as f64;
    let (hf, wf) = (h as f64, w as f64);
    let mut hb = f.max(round_by(hf, f));
    let mut wb = f.max(round_by(wf, f));
    if (hb * wb) as f64 > max_px {
        let beta = (hf * wf / max_px).sqrt();
        hb = f.max((hf / beta / f as f64).floor() as usize * f);
        wb = f.max((wf / beta / f as f64).floor() as usize * f);
    } else if ((hb * wb) as f64) < min_px {
        let beta = (min_px / (hf * wf)).sqrt();
        hb = (hf * beta / f as f64).ceil() as usize * f;
        wb = (wf * beta / f as f64).ceil() as usize * f;
    }
    (hb, wb)
}

impl Preprocess {
    /// Output `(height, width)` for an `h x w` image.
    pub fn target_size(&self, h: usize, w: usize) -> (usize, usize) {
        match *self {
            Self::Fixed { size, .. } => (size, size),
            Self::SmartResize { patch, downsample, min_tokens, max_tokens, .. } => {
                smart_resize(h, w, patch, downsample, min_tokens, max_tokens)
            }
        }
    }

    /// `[1, 3, H, W]` encoder input.
    pub fn apply(&self, img: &LoadedImage, device: &Device) -> Tensor<4> {
        self.planar(img).to_device(device)
    }

    /// The encoder input as values on the host (for worker threads that prepare images
    /// ahead of the step that puts them on the device).
    pub fn planar(&self, img: &LoadedImage) -> Planar {
        let (h, w) = self.target_size(img.rgb.height() as usize, img.rgb.width() as usize);
        let (mean, std) = match self {
            Self::Fixed { mean, std, .. } | Self::SmartResize { mean, std, .. } => (*mean, *std),
        };
        let resized;
        let rgb = if (img.rgb.height() as usize, img.rgb.width() as usize) == (h, w) {
            &img.rgb
        } else {
            resized = image::imageops::resize(&img.rgb, w as u32, h as u32, FilterType::Triangle);
            &resized
        };
        let mut values = vec![0f32; 3 * h * w];
        for (i, p) in rgb.pixels().enumerate() {
            for c in 0..3 {
                values[c * h * w + i] = (p[c] as f32 / 255.0 - mean[c]) / std[c];
            }
        }
        Planar { values, height: h, width: w }
    }
}

/// One preprocessed image, channels first (`[3, height, width]`), on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Planar {
    pub values: Vec<f32>,
    pub height: usize,
    pub width: usize,
}

impl Planar {
    /// `[1, 3, height, width]` on `device`.
    pub fn to_device(self, device: &Device) -> Tensor<4> {
        let shape = [1, 3, self.height, self.width];
        Tensor::from_data(TensorData::new(self.values, shape), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_matches_transformers() {
        // transformers returns (width, height); these are (height, width) of the same calls.
        assert_eq!(smart_resize(512, 512, 16, 2, 64, 256), (512, 512));
        assert_eq!(smart_resize(100, 100, 16, 2, 64, 256), (256, 256));
        assert_eq!(smart_resize(1000, 700, 16, 2, 64, 256), (608, 416));
        assert_eq!(smart_resize(48, 80, 16, 2, 64, 256), (224, 352));
    }
}
