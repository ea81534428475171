//! What every family generator shares: the sample shape, the palette, the layout scale and
//! the dispatch from a [`Family`] to its generator.
//!
//! Balance: each generator rotates through its question kinds by sample index (so kinds
//! are equally frequent), picks the *answer* uniformly from the kind's closed vocabulary
//! first and only then draws an image that makes it true. No answer can therefore win by
//! frequency, and the majority-answer baseline of the manifest stays low.

use image::{Rgb, RgbImage};
use rand::Rng;
use rand::rngs::StdRng;

use super::canvas::Color;
use super::{Family, chart, document, ocr, parking, vqa};

/// One question about the image and its exact answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// The question type (e.g. `count`, `bar_value`), for per-kind statistics.
    pub kind: &'static str,
    pub question: String,
    pub answer: String,
}

impl Turn {
    pub fn new(kind: &'static str, question: impl Into<String>, answer: impl Into<String>) -> Self {
        Self { kind, question: question.into(), answer: answer.into() }
    }
}

/// One generated example: an image and one or more turns about it.
pub struct Sample {
    pub image: RgbImage,
    pub turns: Vec<Turn>,
}

/// Draws sample `index` of `family` at `size x size` pixels from `rng`.
pub fn generate(family: Family, index: usize, size: u32, rng: &mut StdRng) -> Sample {
    match family {
        Family::Vqa => vqa::generate(index, size, rng),
        Family::MultiTurn => vqa::generate_multi_turn(size, rng),
        Family::Document => document::generate(index, size, rng),
        Family::Chart => chart::generate(index, size, rng),
        Family::Ocr => ocr::generate(size, rng),
        Family::Parking => parking::generate(index, size, rng),
    }
}

/// The named colours of shapes, bars and signs: saturated and far apart, so a colour
/// question has exactly one right answer.
pub const COLORS: [(&str, Color); 5] = [
    ("red", Rgb([220, 40, 40])),
    ("green", Rgb([30, 160, 60])),
    ("blue", Rgb([40, 90, 220])),
    ("yellow", Rgb([235, 200, 30])),
    ("purple", Rgb([140, 60, 180])),
];

/// Pale backgrounds (paper, screen) that no palette colour is confused with.
const BACKGROUNDS: [Color; 4] =
    [Rgb([255, 255, 255]), Rgb([244, 242, 236]), Rgb([235, 240, 245]), Rgb([240, 240, 240])];

/// Dark inks for text.
const INKS: [Color; 3] = [Rgb([20, 20, 20]), Rgb([20, 30, 90]), Rgb([60, 60, 60])];

pub fn background(rng: &mut StdRng) -> Color {
    *pick(rng, &BACKGROUNDS)
}

pub fn ink(rng: &mut StdRng) -> Color {
    *pick(rng, &INKS)
}

/// Text and stroke scale: 1 up to 127 px, 2 from 128 px, and so on; layouts are designed
/// on a 64-pixel grid and every length is multiplied by this.
pub fn unit(size: u32) -> u32 {
    (size / 64).max(1)
}

/// A uniformly chosen element of a non-empty list.
pub fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// A uniformly chosen offset in `0..=slack` (0 when there is no room).
pub fn jitter(rng: &mut StdRng, slack: i32) -> i32 {
    if slack <= 0 { 0 } else { rng.random_range(0..=slack) }
}
