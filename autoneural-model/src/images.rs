//! Images in: decode (PNG, JPEG, WebP), apply EXIF orientation, convert to RGB, resize and
//! scale the way each checkpoint format's processor does.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::{Device, Tensor, TensorData};
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::error::{ModelError, Result};
use crate::vision::lfm2_vl_processor::{ImageLayout, Lfm2VlProcessorConfig, Tile};
use crate::vision::lfm3_vl_processor::Lfm3VlProcessorConfig;
use crate::vision::resize_u8::resize_bilinear_antialias;

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
    /// LFM2-VL's processor: smart resize, tiles + thumbnail for large images
    /// ([`crate::vision::lfm2_vl_processor`]).
    Lfm2Vl(Lfm2VlProcessorConfig),
    /// LFM3-VL's (Qwen2-VL's): one image at its smart-resized size, bicubic
    /// ([`crate::vision::lfm3_vl_processor`]); its tower cuts the patches.
    Lfm3Vl(Lfm3VlProcessorConfig),
}

pub use crate::vision::lfm2_vl_processor::smart_resize;

impl Preprocess {
    /// Output `(height, width)` for an `h x w` image as one encoder input (for LFM2-VL the
    /// single-tile size, which is also a split image's thumbnail).
    pub fn target_size(&self, h: usize, w: usize) -> (usize, usize) {
        match self {
            Self::Fixed { size, .. } => (*size, *size),
            Self::Lfm2Vl(p) => p.single_size(h, w),
            Self::Lfm3Vl(p) => p.resized(h, w),
        }
    }

    /// `[1, 3, H, W]` encoder input: the image as one tile (for LFM2-VL what its processor
    /// gives when splitting is off; [`Self::tiles`] gives the tiles of a split image).
    pub fn apply(&self, img: &LoadedImage, device: &Device) -> Tensor<4> {
        self.planar(img).to_device(device)
    }

    /// The encoder input as values on the host (for worker threads that prepare images
    /// ahead of the step that puts them on the device).
    pub fn planar(&self, img: &LoadedImage) -> Planar {
        let (h, w) = self.target_size(img.rgb.height() as usize, img.rgb.width() as usize);
        let values = match self {
            Self::Fixed { mean, std, .. } => {
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
                values
            }
            Self::Lfm2Vl(p) => p.planar(&Tile { rgb: resize_bilinear_antialias(&img.rgb, w as u32, h as u32) }),
            Self::Lfm3Vl(p) => p.norm().planar(&p.resize(&img.rgb)),
        };
        Planar { values, height: h, width: w }
    }

    /// The encoder inputs of one image, `[1, 3, h, w]` each, in prompt order, and how the
    /// prompt lays out their tokens (`None`: one block, as many tokens as the encoder gives).
    pub fn tiles(&self, img: &LoadedImage, device: &Device) -> (Vec<Tensor<4>>, Option<ImageLayout>) {
        match self {
            Self::Fixed { .. } | Self::Lfm3Vl(_) => (vec![self.apply(img, device)], None),
            Self::Lfm2Vl(p) => {
                let processed = p.process(&img.rgb);
                (processed.tiles.iter().map(|t| p.tensor(t, device)).collect(), Some(processed.layout))
            }
        }
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

/// transformers' rescale and normalisation of 8-bit pixel values, fused as its torchvision
/// backend fuses them: mean and std are divided by the rescale factor (in f32) and each value
/// is `(x - mean') / std'`, which rounds differently from `(x * factor - mean) / std`.
#[derive(Debug, Clone, Copy)]
pub struct PixelNorm {
    /// Per channel `(scale, offset)`; a NaN scale means rescale only (`x * factor`).
    affine: [(f32, f32); 3],
    rescale: f32,
}

impl PixelNorm {
    pub fn new(rescale_factor: f64, do_rescale: bool, do_normalize: bool, mean: [f32; 3], std: [f32; 3]) -> Self {
        let inv = (1.0 / rescale_factor) as f32;
        let affine = std::array::from_fn(|c| match (do_rescale, do_normalize) {
            (true, true) => (std[c] * inv, mean[c] * inv),
            (false, true) => (std[c], mean[c]),
            // x * factor == x / (1 / factor) up to rounding; transformers multiplies.
            (true, false) => (f32::NAN, 0.0),
            (false, false) => (1.0, 0.0),
        });
        Self { affine, rescale: rescale_factor as f32 }
    }

    /// One 8-bit value of channel `c`.
    pub fn value(&self, x: u8, c: usize) -> f32 {
        let (scale, offset) = self.affine[c];
        if scale.is_nan() { x as f32 * self.rescale } else { (x as f32 - offset) / scale }
    }

    /// An image's values, channels first (`[3 * h * w]`).
    pub fn planar(&self, rgb: &RgbImage) -> Vec<f32> {
        let (h, w) = (rgb.height() as usize, rgb.width() as usize);
        let mut planar = vec![0f32; 3 * h * w];
        for (i, p) in rgb.pixels().enumerate() {
            for c in 0..3 {
                planar[c * h * w + i] = self.value(p[c], c);
            }
        }
        planar
    }
}
