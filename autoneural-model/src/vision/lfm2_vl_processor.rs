//! LFM2-VL's image processor and prompt expansion, as transformers 5.25 has them
//! (`Lfm2VlImageProcessor` and `Lfm2VlProcessor`), so that LFM2-VL checkpoints see images
//! cut and scaled the way they were trained.
//!
//! For an `H x W` image (patch `p`, pixel-unshuffle factor `f`, tile side `T`):
//! 1. Smart resize: both sides multiples of `p*f`, aspect kept, `p*p*f*f`-pixel tokens
//!    between `min_image_tokens` and `max_image_tokens` ([`smart_resize`]).
//! 2. Split? Only when splitting is on and the image is "too large": with each side rounded
//!    to a multiple of `p*f` (half to even, at least `p`), more than
//!    `max_image_tokens * p^2 * f^2 * max_pixels_tolerance` pixels.
//! 3. The grid: among `cols x rows` with `min_tiles <= cols*rows <= max_tiles` (in
//!    transformers' order, [`target_ratios`]), the one whose `cols/rows` is closest to
//!    `W/H`; on an exact tie the later one wins if `H*W > T*T*cols*rows / 2`.
//! 4. A split image is resized to `rows*T x cols*T` and cut into `T x T` tiles, row-major;
//!    the thumbnail (if `use_thumbnail` and the grid is not 1x1) is the whole image at the
//!    smart-resize size. An image that is not split is only smart-resized.
//! 5. Every resize is bilinear with antialiasing on the 8-bit image ([`super::resize_u8`]),
//!    then `(x * rescale_factor - mean) / std`.
//! 6. Each tile is its own SigLIP2 NaFlex sequence: `(h/p) x (w/p)` patches, the position
//!    table resized to that grid (what transformers' padding + attention mask computes, without
//!    the padding); after unshuffle, `(h/p/f) * (w/p/f)` image tokens.
//! 7. The prompt: `<image>` becomes `<|image_start|>`, then per tile
//!    `<|img_row_R_col_C|>` (1-based) and its tokens, then `<|img_thumbnail|>` and the
//!    thumbnail's tokens, then `<|image_end|>`; an image that is not split is just its tokens
//!    between start and end. Without `use_image_special_tokens` only the image tokens remain.
//!
//! Config keys (transformers' defaults): `do_image_splitting` (true), `min_tiles` (2),
//! `max_tiles` (10), `use_thumbnail` (true), `min_image_tokens` (64), `max_image_tokens`
//! (256), `encoder_patch_size` (16), `downsample_factor` (2), `tile_size` (512),
//! `max_pixels_tolerance` (2.0), `resample` (2 = bilinear, the only one supported),
//! `do_rescale` (true), `rescale_factor` (1/255), `do_normalize` (true), `image_mean` and
//! `image_std` (0.5 each). They are read from `processor_config.json`'s `image_processor`
//! object (transformers 5), else from `preprocessor_config.json`; a legacy checkpoint whose
//! preprocessor is `Siglip2ImageProcessor` keeps them in `config.json`.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use serde_json::{Map, Value, json};

use super::resize_u8::resize_bilinear_antialias;
use crate::checkpoint::json::{Fields, read_object};
use crate::error::{ModelError, Result};
use crate::images::PixelNorm;
use crate::tokenizer::TextTokenizer;

/// The most tiles a config may ask for (transformers enumerates grids up to `max_tiles`
/// tiles; marker tokens exist for rows and columns up to 10 in published tokenizers).
pub const MAX_TILES: usize = 64;
/// The largest tile side, in pixels.
pub const MAX_TILE_SIZE: usize = 2048;
/// The most image tokens one tile or thumbnail may be configured to hold.
pub const MAX_IMAGE_TOKENS: usize = 16384;

/// How LFM2-VL turns an image into tiles and prompt tokens (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Lfm2VlProcessorConfig {
    pub do_image_splitting: bool,
    pub min_tiles: usize,
    pub max_tiles: usize,
    pub use_thumbnail: bool,
    pub min_image_tokens: usize,
    pub max_image_tokens: usize,
    pub encoder_patch_size: usize,
    pub downsample_factor: usize,
    pub tile_size: usize,
    pub max_pixels_tolerance: f64,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// The processor's `use_image_special_tokens`: start/end, tile and thumbnail markers.
    pub use_image_special_tokens: bool,
}

impl Default for Lfm2VlProcessorConfig {
    /// transformers' defaults (LFM2-VL's published processors use them).
    fn default() -> Self {
        Self {
            do_image_splitting: true,
            min_tiles: 2,
            max_tiles: 10,
            use_thumbnail: true,
            min_image_tokens: 64,
            max_image_tokens: 256,
            encoder_patch_size: 16,
            downsample_factor: 2,
            tile_size: 512,
            max_pixels_tolerance: 2.0,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            use_image_special_tokens: true,
        }
    }
}

/// How one image appears in a prompt: the image-token blocks and the markers around them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ImageLayout {
    /// One block of image tokens (AutoNeural; an LFM2-VL image that is not split).
    Single(usize),
    /// LFM2-VL tiles: `rows x cols` tiles of `per_tile` tokens, row-major, then the
    /// thumbnail's tokens if there is one.
    Tiled { rows: usize, cols: usize, per_tile: usize, thumbnail: Option<usize> },
}

impl ImageLayout {
    /// Image tokens (feature rows) in all.
    pub fn tokens(&self) -> usize {
        match *self {
            Self::Single(n) => n,
            Self::Tiled { rows, cols, per_tile, thumbnail } => rows * cols * per_tile + thumbnail.unwrap_or(0),
        }
    }

    /// Appends this image's ids: its image tokens, and with `markers` the tile and thumbnail
    /// markers (each the tokenizer's token, or the marker text tokenized as transformers does
    /// when the vocabulary lacks it). Start/end tokens are the caller's.
    pub fn push_ids(&self, tok: &TextTokenizer, image_token_id: u32, markers: bool, ids: &mut Vec<u32>) -> Result<()> {
        let marker = |text: &str, ids: &mut Vec<u32>| -> Result<()> {
            match tok.token_id(text) {
                Some(id) => ids.push(id),
                None => ids.extend(tok.encode(text, false)?),
            }
            Ok(())
        };
        match *self {
            Self::Single(n) => ids.extend(std::iter::repeat_n(image_token_id, n)),
            Self::Tiled { rows, cols, per_tile, thumbnail } => {
                for r in 1..=rows {
                    for c in 1..=cols {
                        if markers {
                            marker(&format!("<|img_row_{r}_col_{c}|>"), ids)?;
                        }
                        ids.extend(std::iter::repeat_n(image_token_id, per_tile));
                    }
                }
                if let Some(n) = thumbnail {
                    if markers {
                        marker("<|img_thumbnail|>", ids)?;
                    }
                    ids.extend(std::iter::repeat_n(image_token_id, n));
                }
            }
        }
        Ok(())
    }
}

impl From<usize> for ImageLayout {
    fn from(n: usize) -> Self {
        Self::Single(n)
    }
}

/// Where an image's tiles come from: the grid (1x1 when not split) and the size of the
/// single-tile / thumbnail resize, `(height, width)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitLayout {
    pub split: bool,
    pub rows: usize,
    pub cols: usize,
    pub resized: (usize, usize),
}

/// One tile, 8-bit RGB as resized (`[h, w, 3]`); its pixel values are [`Lfm2VlProcessorConfig::normalize`]d.
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    pub rgb: RgbImage,
}

impl Tile {
    pub fn height(&self) -> usize {
        self.rgb.height() as usize
    }

    pub fn width(&self) -> usize {
        self.rgb.width() as usize
    }

    /// NaFlex's patch grid `(h/p, w/p)` (transformers' `spatial_shapes` row).
    pub fn spatial_shape(&self, p: usize) -> (usize, usize) {
        (self.height() / p, self.width() / p)
    }

    /// The 8-bit values in transformers' `pixel_values` layout, unpadded:
    /// `[(h/p)*(w/p), p*p*3]`, patches row-major, each `(py, px, channel)`.
    pub fn patches(&self, p: usize) -> Vec<u8> {
        let (gh, gw) = self.spatial_shape(p);
        let w = self.width();
        let raw = self.rgb.as_raw();
        let mut out = Vec::with_capacity(gh * gw * p * p * 3);
        for gy in 0..gh {
            for gx in 0..gw {
                for py in 0..p {
                    let row = (gy * p + py) * w + gx * p;
                    out.extend_from_slice(&raw[row * 3..(row + p) * 3]);
                }
            }
        }
        out
    }
}

/// An image as LFM2-VL's processor gives it: tiles in prompt order (grid tiles row-major,
/// then the thumbnail; or the one resized image) and the prompt layout they fill.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImage {
    pub tiles: Vec<Tile>,
    pub layout: ImageLayout,
    pub split: SplitLayout,
}

/// Python's `round(x / f) * f` (half to even).
fn round_by(x: f64, f: usize) -> usize {
    (x / f as f64).round_ties_even() as usize * f
}

/// LFM2-VL's `smart_resize`: `(height, width)`, both multiples of `patch * downsample`,
/// aspect kept, `[min_tokens, max_tokens]` tokens (the short side never below one block,
/// so extreme aspect ratios may exceed `max_tokens`).
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

/// The `(cols, rows)` grids with `min..=max` tiles in the order transformers tries them:
/// `sorted(set(ratios), key=cols*rows)`. Python's sort is stable, so grids with the same
/// number of tiles keep the order of CPython's set, which decides exact aspect-ratio ties;
/// [`python_set_order`] reproduces it.
pub fn target_ratios(min_tiles: usize, max_tiles: usize) -> Vec<(usize, usize)> {
    let mut ratios = Vec::new();
    for n in min_tiles..=max_tiles {
        for w in 1..=n {
            for h in 1..=n {
                if (min_tiles..=max_tiles).contains(&(w * h)) {
                    ratios.push((w, h));
                }
            }
        }
    }
    let mut unique = python_set_order(&ratios);
    unique.sort_by_key(|&(w, h)| w * h);
    unique
}

/// CPython's `hash((a, b))` for small non-negative ints (xxHash-based, Python >= 3.8).
fn python_tuple_hash(items: [usize; 2]) -> u64 {
    const P1: u64 = 11400714785074694791;
    const P2: u64 = 14029467366897019727;
    const P5: u64 = 2870177450012600261;
    let mut acc = P5;
    for lane in items {
        acc = acc.wrapping_add((lane as u64).wrapping_mul(P2));
        acc = acc.rotate_left(31);
        acc = acc.wrapping_mul(P1);
    }
    acc = acc.wrapping_add(2 ^ (P5 ^ 3527539));
    if acc == u64::MAX { 1546275796 } else { acc }
}

/// The iteration order of `set(items)` in CPython (setobject.c: 8-slot start, linear probes
/// of 9 then perturbed jumps, growth to 4x `used` when 60% full, re-insertion in table order).
pub fn python_set_order(items: &[(usize, usize)]) -> Vec<(usize, usize)> {
    const LINEAR_PROBES: usize = 9;
    const PERTURB_SHIFT: u32 = 5;
    type Slot = Option<((usize, usize), u64)>;
    // Finds the first free slot for `hash`, or the slot holding `key` (then `true`).
    fn probe(table: &[Slot], hash: u64, key: Option<(usize, usize)>) -> (usize, bool) {
        let mask = table.len() - 1;
        let mut perturb = hash;
        let mut i = hash as usize & mask;
        loop {
            let probes = if i + LINEAR_PROBES <= mask { LINEAR_PROBES } else { 0 };
            for (j, slot) in table.iter().enumerate().skip(i).take(probes + 1) {
                match slot {
                    None => return (j, false),
                    Some((k, h)) if *h == hash && Some(*k) == key => return (j, true),
                    _ => {}
                }
            }
            perturb >>= PERTURB_SHIFT;
            i = (i.wrapping_mul(5).wrapping_add(1).wrapping_add(perturb as usize)) & mask;
        }
    }
    let mut table: Vec<Slot> = vec![None; 8];
    let mut used = 0usize;
    for &key in items {
        let hash = python_tuple_hash([key.0, key.1]);
        let (slot, found) = probe(&table, hash, Some(key));
        if found {
            continue;
        }
        table[slot] = Some((key, hash));
        used += 1;
        let mask = table.len() - 1;
        if used * 5 >= mask * 3 {
            let mut size = 8;
            while size <= used * 4 {
                size <<= 1;
            }
            let old = std::mem::replace(&mut table, vec![None; size]);
            for (key, hash) in old.into_iter().flatten() {
                let (slot, _) = probe(&table, hash, None);
                table[slot] = Some((key, hash));
            }
        }
    }
    table.into_iter().flatten().map(|(k, _)| k).collect()
}

/// transformers' `find_closest_aspect_ratio`: the `(cols, rows)` whose ratio is closest to
/// `width / height`; on an exact tie, a later grid wins when the image covers more than half
/// of its area at `tile` pixels a side.
pub fn closest_grid(ratios: &[(usize, usize)], height: usize, width: usize, tile: usize) -> (usize, usize) {
    let aspect = width as f64 / height as f64;
    let area = (width * height) as f64;
    let mut best_diff = f64::INFINITY;
    let mut best = (1, 1);
    for &(c, r) in ratios {
        let diff = (aspect - c as f64 / r as f64).abs();
        if diff < best_diff {
            best_diff = diff;
            best = (c, r);
        } else if diff == best_diff && area > 0.5 * (tile * tile * c * r) as f64 {
            best = (c, r);
        }
    }
    best
}

fn bad(path: &Path, key: &str, message: impl Into<String>) -> ModelError {
    ModelError::config(path, key, message)
}

/// Reads keys from the first of several JSON objects that has them.
struct Sources<'a> {
    list: Vec<Fields<'a>>,
}

impl Sources<'_> {
    fn find(&self, key: &str) -> Option<&Fields<'_>> {
        self.list.iter().find(|f| f.get(&[key]).is_some())
    }
    fn usize(&self, key: &str, default: usize) -> Result<usize> {
        Ok(match self.find(key) {
            Some(f) => f.usize_req(&[key])?,
            None => default,
        })
    }
    fn bool(&self, key: &str, default: bool) -> Result<bool> {
        Ok(match self.find(key) {
            Some(f) => f.bool_opt(&[key])?.unwrap_or(default),
            None => default,
        })
    }
    fn f64(&self, key: &str, default: f64) -> Result<f64> {
        Ok(match self.find(key) {
            Some(f) => f.f64_opt(&[key])?.unwrap_or(default),
            None => default,
        })
    }
    fn floats3(&self, key: &str, default: [f32; 3]) -> Result<[f32; 3]> {
        let Some(f) = self.find(key) else { return Ok(default) };
        match f.get(&[key]) {
            Some((_, Value::Array(a))) if a.len() == 3 && a.iter().all(Value::is_number) => {
                Ok([0, 1, 2].map(|i| a[i].as_f64().unwrap_or_default() as f32))
            }
            Some((_, Value::Number(n))) => Ok([n.as_f64().unwrap_or_default() as f32; 3]),
            Some((_, v)) => Err(bad(&f.path, key, format!("expected three numbers (one per RGB channel), found {v}"))),
            None => Ok(default),
        }
    }
    /// The file a key was read from (or would be: the first source).
    fn path(&self, key: &str) -> &Path {
        self.find(key).or(self.list.first()).map_or(Path::new("preprocessor_config.json"), |f| &f.path)
    }
}

impl Lfm2VlProcessorConfig {
    /// Reads the processor config of the checkpoint directory `dir` (see the module docs for
    /// where it is looked for); `config` is its `config.json` object. Keys absent everywhere
    /// take transformers' defaults, except `encoder_patch_size` and `downsample_factor`, which
    /// default to the model's (`patch` and `downsample`). Every value is checked.
    pub fn from_dir(dir: &Path, config: &Map<String, Value>, patch: usize, downsample: usize) -> Result<Self> {
        let processor_path = dir.join("processor_config.json");
        let processor = if processor_path.exists() { read_object(&processor_path)? } else { Map::new() };
        let pre_path = dir.join("preprocessor_config.json");
        let nested = processor.get("image_processor").and_then(Value::as_object);
        let pre = match nested {
            Some(_) => Map::new(),
            None if pre_path.exists() => read_object(&pre_path)?,
            None => Map::new(),
        };
        let (image_path, image_map) = match nested {
            Some(map) => (processor_path.clone(), map),
            None => (pre_path, &pre),
        };
        let image = Fields::new(&image_path, image_map);
        let mut list = vec![image];
        // LFM2-VL's first hub release: a SigLIP2 preprocessor, the tiling keys in config.json.
        let legacy = list[0].str_opt(&["image_processor_type"])?.is_some_and(|t| !t.starts_with("Lfm2Vl"));
        if legacy {
            list.push(Fields::new(dir.join("config.json"), config));
        }
        let src = Sources { list };
        let processor_fields = Fields::new(&processor_path, &processor);
        let d = Self::default();
        let cfg = Self {
            do_image_splitting: src.bool("do_image_splitting", d.do_image_splitting)?,
            min_tiles: src.usize("min_tiles", d.min_tiles)?,
            max_tiles: src.usize("max_tiles", d.max_tiles)?,
            use_thumbnail: src.bool("use_thumbnail", d.use_thumbnail)?,
            min_image_tokens: src.usize("min_image_tokens", d.min_image_tokens)?,
            max_image_tokens: src.usize("max_image_tokens", d.max_image_tokens)?,
            encoder_patch_size: src.usize("encoder_patch_size", patch)?,
            downsample_factor: src.usize("downsample_factor", downsample)?,
            tile_size: src.usize("tile_size", d.tile_size)?,
            max_pixels_tolerance: src.f64("max_pixels_tolerance", d.max_pixels_tolerance)?,
            do_rescale: src.bool("do_rescale", d.do_rescale)?,
            rescale_factor: src.f64("rescale_factor", d.rescale_factor)?,
            do_normalize: src.bool("do_normalize", d.do_normalize)?,
            image_mean: src.floats3("image_mean", d.image_mean)?,
            image_std: src.floats3("image_std", d.image_std)?,
            use_image_special_tokens: match processor_fields.bool_opt(&["use_image_special_tokens"])? {
                Some(v) => v,
                None if legacy => Fields::new(dir.join("config.json"), config)
                    .bool_opt(&["use_image_special_tokens"])?
                    .unwrap_or(true),
                None => true,
            },
        };
        if let Some(f) = src.find("resample") {
            let r = f.usize_req(&["resample"])?;
            if r != 2 {
                return Err(bad(&f.path, "resample", format!("{r}: only 2 (bilinear, LFM2-VL's) is supported")));
            }
        }
        cfg.check().map_err(|(key, message)| bad(src.path(key), key, message))?;
        Ok(cfg)
    }

    /// Every value within bounds, or the key and what is wrong.
    pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        let p = self.encoder_patch_size;
        let f = self.downsample_factor;
        if !(1..=64).contains(&p) {
            return Err(("encoder_patch_size", format!("{p} is not between 1 and 64")));
        }
        if !(1..=8).contains(&f) {
            return Err(("downsample_factor", format!("{f} is not between 1 and 8")));
        }
        if !(1..=MAX_IMAGE_TOKENS).contains(&self.min_image_tokens) {
            return Err((
                "min_image_tokens",
                format!("{} is not between 1 and {MAX_IMAGE_TOKENS}", self.min_image_tokens),
            ));
        }
        if !(self.min_image_tokens..=MAX_IMAGE_TOKENS).contains(&self.max_image_tokens) {
            return Err((
                "max_image_tokens",
                format!(
                    "{} is not between min_image_tokens ({}) and {MAX_IMAGE_TOKENS}",
                    self.max_image_tokens, self.min_image_tokens
                ),
            ));
        }
        if !(self.max_pixels_tolerance.is_finite()
            && self.max_pixels_tolerance > 0.0
            && self.max_pixels_tolerance <= 1e3)
        {
            return Err((
                "max_pixels_tolerance",
                format!("{} is not a number in (0, 1000]", self.max_pixels_tolerance),
            ));
        }
        if !(self.rescale_factor.is_finite() && self.rescale_factor > 0.0) {
            return Err(("rescale_factor", format!("{} is not a positive number", self.rescale_factor)));
        }
        if self.image_mean.iter().any(|m| !m.is_finite()) {
            return Err(("image_mean", format!("{:?} holds a value that is not finite", self.image_mean)));
        }
        if self.image_std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return Err(("image_std", format!("{:?} holds zero or a value that is not finite", self.image_std)));
        }
        if self.do_image_splitting {
            if !(1..=MAX_TILES).contains(&self.max_tiles) {
                return Err(("max_tiles", format!("{} is not between 1 and {MAX_TILES}", self.max_tiles)));
            }
            if !(1..=self.max_tiles).contains(&self.min_tiles) {
                let message = format!("{} is not between 1 and max_tiles ({})", self.min_tiles, self.max_tiles);
                return Err(("min_tiles", message));
            }
            let t = self.tile_size;
            // A tile's patch grid must unshuffle exactly: transformers counts ceil((T/p)/f)
            // tokens per tile while the model keeps floor, and the two must agree.
            if !(1..=MAX_TILE_SIZE).contains(&t) || !t.is_multiple_of(p * f) {
                return Err((
                    "tile_size",
                    format!(
                        "{t} must be a multiple of encoder_patch_size * downsample_factor ({}) up to {MAX_TILE_SIZE}",
                        p * f
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The config as transformers writes `preprocessor_config.json`.
    pub fn to_json(&self) -> Value {
        json!({
            "image_processor_type": "Lfm2VlImageProcessor",
            "processor_class": "Lfm2VlProcessor",
            "do_image_splitting": self.do_image_splitting,
            "min_tiles": self.min_tiles,
            "max_tiles": self.max_tiles,
            "use_thumbnail": self.use_thumbnail,
            "min_image_tokens": self.min_image_tokens,
            "max_image_tokens": self.max_image_tokens,
            "encoder_patch_size": self.encoder_patch_size,
            "downsample_factor": self.downsample_factor,
            "tile_size": self.tile_size,
            "max_pixels_tolerance": self.max_pixels_tolerance,
            "resample": 2,
            "do_resize": true,
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "do_pad": true,
        })
    }

    /// Tokens of a resized `h x w` image or tile (multiples of `p*f`): `ceil((h/p)/f) * ceil((w/p)/f)`.
    pub fn tokens(&self, h: usize, w: usize) -> usize {
        let (p, f) = (self.encoder_patch_size, self.downsample_factor);
        (h / p).div_ceil(f) * (w / p).div_ceil(f)
    }

    /// The most patches transformers pads one tile to; a single-tile resize never exceeds it
    /// here (see [`Self::split_layout`]).
    pub fn max_num_patches(&self) -> usize {
        let thumb = self.max_image_tokens * self.downsample_factor.pow(2);
        let tile = if self.do_image_splitting { (self.tile_size / self.encoder_patch_size).pow(2) } else { 0 };
        thumb.max(tile)
    }

    fn tiles_range(&self) -> (usize, usize) {
        if self.do_image_splitting { (self.min_tiles, self.max_tiles) } else { (1, 1) }
    }

    /// transformers' `_is_image_too_large` (note the `max(p, ...)`, not `max(p*f, ...)`).
    fn too_large(&self, h: usize, w: usize) -> bool {
        let (p, f) = (self.encoder_patch_size, self.downsample_factor);
        let hb = p.max(round_by(h as f64, p * f));
        let wb = p.max(round_by(w as f64, p * f));
        (hb * wb) as f64 > (self.max_image_tokens * p * p * f * f) as f64 * self.max_pixels_tolerance
    }

    /// The smart-resize size of an `h x w` image, its long side shortened if it would need
    /// more patches than [`Self::max_num_patches`]. That happens only at extreme aspect
    /// ratios (the short side cannot go below one block); transformers cannot pad such an
    /// image to its mask and fails, so this is a choice, not parity.
    pub fn single_size(&self, h: usize, w: usize) -> (usize, usize) {
        let (p, f) = (self.encoder_patch_size, self.downsample_factor);
        let (mut rh, mut rw) = smart_resize(h, w, p, f, self.min_image_tokens, self.max_image_tokens);
        let limit = self.max_num_patches();
        let block = p * f;
        while (rh / p) * (rw / p) > limit {
            if rh >= rw && rh > block {
                rh -= block;
            } else if rw > block {
                rw -= block;
            } else {
                break;
            }
        }
        (rh, rw)
    }

    /// transformers' `_get_split_layout` for an `h x w` image.
    pub fn split_layout(&self, h: usize, w: usize) -> SplitLayout {
        let (min_tiles, max_tiles) = self.tiles_range();
        let resized = self.single_size(h, w);
        let splitting = !(min_tiles == 1 && max_tiles == 1);
        if splitting && self.too_large(h, w) {
            let (cols, rows) = closest_grid(&target_ratios(min_tiles, max_tiles), h, w, self.tile_size);
            SplitLayout { split: true, rows, cols, resized }
        } else {
            SplitLayout { split: false, rows: 1, cols: 1, resized }
        }
    }

    /// The prompt layout of an `h x w` image.
    pub fn layout(&self, h: usize, w: usize) -> ImageLayout {
        self.layout_of(&self.split_layout(h, w))
    }

    fn layout_of(&self, s: &SplitLayout) -> ImageLayout {
        let t = self.tile_size;
        if !s.split {
            return ImageLayout::Single(self.tokens(s.resized.0, s.resized.1));
        }
        if s.rows * s.cols == 1 {
            // A 1x1 "split" (possible only with min_tiles = 1) is one tile_size tile and no
            // thumbnail; transformers counts the thumbnail's tokens for it and then fails on
            // the mismatch, so the tile's own count is used.
            return ImageLayout::Single(self.tokens(t, t));
        }
        ImageLayout::Tiled {
            rows: s.rows,
            cols: s.cols,
            per_tile: self.tokens(t, t),
            thumbnail: self.use_thumbnail.then(|| self.tokens(s.resized.0, s.resized.1)),
        }
    }

    /// Resizes and tiles `rgb` (see the module docs).
    pub fn process(&self, rgb: &RgbImage) -> ProcessedImage {
        let (h, w) = (rgb.height() as usize, rgb.width() as usize);
        let split = self.split_layout(h, w);
        let layout = self.layout_of(&split);
        let resize = |rh: usize, rw: usize| resize_bilinear_antialias(rgb, rw as u32, rh as u32);
        let tiles = if split.split {
            let t = self.tile_size;
            let whole = resize(split.rows * t, split.cols * t);
            let mut tiles = Vec::with_capacity(split.rows * split.cols + 1);
            for r in 0..split.rows {
                for c in 0..split.cols {
                    let tile = image::imageops::crop_imm(&whole, (c * t) as u32, (r * t) as u32, t as u32, t as u32);
                    tiles.push(Tile { rgb: tile.to_image() });
                }
            }
            if matches!(layout, ImageLayout::Tiled { thumbnail: Some(_), .. }) {
                tiles.push(Tile { rgb: resize(split.resized.0, split.resized.1) });
            }
            tiles
        } else {
            vec![Tile { rgb: resize(split.resized.0, split.resized.1) }]
        };
        ProcessedImage { tiles, layout, split }
    }

    /// The rescale and normalisation of 8-bit values.
    fn norm(&self) -> PixelNorm {
        PixelNorm::new(self.rescale_factor, self.do_rescale, self.do_normalize, self.image_mean, self.image_std)
    }

    /// transformers' `pixel_values` of a tile, unpadded: `[(h/p)*(w/p), p*p*3]` row-major.
    pub fn pixel_values(&self, tile: &Tile) -> Vec<f32> {
        let norm = self.norm();
        tile.patches(self.encoder_patch_size).iter().enumerate().map(|(i, &x)| norm.value(x, i % 3)).collect()
    }

    /// A tile as encoder input `[1, 3, h, w]`.
    pub fn tensor(&self, tile: &Tile, device: &Device) -> Tensor<4> {
        let (h, w) = (tile.height(), tile.width());
        Tensor::from_data(TensorData::new(self.planar(tile), [1, 3, h, w]), device)
    }

    /// A tile's encoder input on the host, channels first (`[3 * h * w]`).
    pub fn planar(&self, tile: &Tile) -> Vec<f32> {
        self.norm().planar(&tile.rgb)
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

    #[test]
    fn grid_order_and_choice_match_transformers() {
        // Lfm2VlImageProcessor()._target_ratios(2, 10) in transformers 5.25.
        let want = [
            (1, 2),
            (2, 1),
            (3, 1),
            (1, 3),
            (2, 2),
            (4, 1),
            (1, 4),
            (5, 1),
            (1, 5),
            (1, 6),
            (6, 1),
            (3, 2),
            (2, 3),
            (7, 1),
            (1, 7),
            (4, 2),
            (2, 4),
            (1, 8),
            (8, 1),
            (1, 9),
            (3, 3),
            (9, 1),
            (2, 5),
            (5, 2),
            (10, 1),
            (1, 10),
        ];
        assert_eq!(target_ratios(2, 10), want);
        let d = Lfm2VlProcessorConfig::default();
        let s = d.split_layout(900, 1100);
        assert_eq!((s.split, s.rows, s.cols, s.resized), (true, 2, 2, (448, 544)));
        let s = d.split_layout(700, 1000);
        assert_eq!((s.split, s.rows, s.cols, s.resized), (true, 2, 3, (416, 608)));
        // 1600x300 stays one tile: its rounded area is under the tolerance.
        assert_eq!(d.split_layout(300, 1600), SplitLayout { split: false, rows: 1, cols: 1, resized: (192, 1152) });
        assert_eq!(d.layout(900, 1100), ImageLayout::Tiled { rows: 2, cols: 2, per_tile: 256, thumbnail: Some(238) });
        assert_eq!(d.layout(40, 60), ImageLayout::Single(70));
    }

    #[test]
    fn extreme_aspect_ratios_stay_within_the_patch_budget() {
        let d = Lfm2VlProcessorConfig::default();
        let (h, w) = d.single_size(1, 8000);
        assert!((h / 16) * (w / 16) <= d.max_num_patches() && h == 32 && w % 32 == 0, "{h}x{w}");
    }

    #[test]
    fn patches_are_in_transformers_order() {
        let mut rgb = RgbImage::new(4, 2);
        for (x, y, p) in rgb.enumerate_pixels_mut() {
            *p = image::Rgb([(y * 4 + x) as u8, 100 + (y * 4 + x) as u8, 200]);
        }
        let tile = Tile { rgb };
        // Two 2x2 patches; inside each (py, px, channel).
        let p = tile.patches(2);
        assert_eq!(&p[..12], &[0, 100, 200, 1, 101, 200, 4, 104, 200, 5, 105, 200]);
        assert_eq!(&p[12..15], &[2, 102, 200]);
    }
}
