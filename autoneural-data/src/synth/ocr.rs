//! `ocr`: one short uppercase word, written large, and "What word is written?" → the word.
//!
//! Layout: the word on one line at the largest font scale that fits the width with a
//! two-unit margin, or one step smaller, placed anywhere that keeps it inside the image,
//! with a thin underline in a palette colour as a distractor.

use rand::Rng;
use rand::rngs::StdRng;

use super::canvas::Canvas;
use super::font;
use super::tasks::{self, COLORS, Sample, Turn, jitter, pick};

/// The vocabulary: 3–5 letter words, uniformly drawn.
pub const WORDS: [&str; 40] = [
    "RED", "BLUE", "CAT", "DOG", "SUN", "MOON", "STAR", "TREE", "FISH", "BIRD", "CAR", "BUS", "ROAD", "PARK", "STOP",
    "EXIT", "OPEN", "GATE", "DOOR", "LAMP", "BOOK", "MILK", "RAIN", "SNOW", "WIND", "FIRE", "GOLD", "SALT", "CAKE",
    "WOLF", "BEAR", "LION", "FROG", "SHIP", "KITE", "ROSE", "LEAF", "LAKE", "NORTH", "SOUTH",
];

/// One `ocr` sample.
pub fn generate(size: u32, rng: &mut StdRng) -> Sample {
    let word = *pick(rng, &WORDS);
    let u = tasks::unit(size) as i32;
    let s = size as i32;
    let mut canvas = Canvas::new(size, size, tasks::background(rng));
    let fit = font::fit_scale(word, (s - 4 * u) as u32);
    let scale = rng.random_range(fit.saturating_sub(1).max(1)..=fit);
    let (w, h) = (font::text_width(word, scale) as i32, font::text_height(scale) as i32);
    let x = 2 * u + jitter(rng, s - 4 * u - w);
    // Room below the word for the underline (one unit of gap, one unit thick).
    let y = 2 * u + jitter(rng, s - 6 * u - h);
    canvas.text(x, y, word, scale, tasks::ink(rng));
    canvas.fill_rect(x, y + h + u, w, u, pick(rng, &COLORS).1);
    Sample { image: canvas.into_image(), turns: vec![Turn::new("word", "What word is written?", word)] }
}
