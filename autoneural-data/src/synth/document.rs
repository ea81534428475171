//! `document`: a small form with two labelled fields out of four (`NAME` ANNA, `CODE` 47,
//! `CITY` ROME, `ROOM` B7), and "What is the CODE?" → `47`.
//!
//! Layout: a coloured header band across the top, a one-unit border, then the two fields
//! one below the other, each its caption in the small font (scale [`tasks::unit`]) with the
//! entry under it at the largest scale that fits any value, as a filled-in form writes its
//! entries larger than its captions: scale 2 at 64 px, 3 at 96 px. Entries beside their
//! captions would leave room for scale 2 only at 96 px, and at that size a model of the
//! quickstart's budget reads too few of them (docs/training.md, "What the quickstart gives").

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::canvas::Canvas;
use super::font;
use super::tasks::{self, COLORS, Sample, Turn, jitter, pick};

/// Field labels, asked in rotation.
pub const LABELS: [&str; 4] = ["NAME", "CODE", "CITY", "ROOM"];

/// The question kind of each label (same order), for per-kind statistics.
const KINDS: [&str; 4] = ["name", "code", "city", "room"];

pub const NAMES: [&str; 12] =
    ["ANNA", "BOB", "CARL", "DORA", "EMMA", "FINN", "GINA", "HUGO", "IVY", "JACK", "KIM", "LEO"];

pub const CITIES: [&str; 12] =
    ["ROME", "OSLO", "LIMA", "BONN", "BERN", "DOHA", "NICE", "RIGA", "BAKU", "LYON", "PISA", "KYIV"];

/// Room letters; a room is a letter and a digit 1–9 (`B7`).
pub const ROOM_LETTERS: &str = "ABCDEF";

/// A uniformly drawn value for `label`: a name, a two-digit code 10–99, a city or a room.
fn value(label: &str, rng: &mut StdRng) -> String {
    match label {
        "NAME" => pick(rng, &NAMES).to_string(),
        "CODE" => rng.random_range(10..=99u32).to_string(),
        "CITY" => pick(rng, &CITIES).to_string(),
        _ => {
            let letter = ROOM_LETTERS.as_bytes()[rng.random_range(0..ROOM_LETTERS.len())] as char;
            format!("{letter}{}", rng.random_range(1..=9u32))
        }
    }
}

/// Every possible field value: names, codes, cities, rooms.
pub fn answers() -> Vec<String> {
    let mut out: Vec<String> = NAMES.iter().chain(&CITIES).map(|s| s.to_string()).collect();
    out.extend((10..=99).map(|v: u32| v.to_string()));
    out.extend(ROOM_LETTERS.chars().flat_map(|l| (1..=9).map(move |d| format!("{l}{d}"))));
    out
}

/// One `document` sample; the asked label rotates with `index`.
pub fn generate(index: usize, size: u32, rng: &mut StdRng) -> Sample {
    let (asked, kind) = (LABELS[index % LABELS.len()], KINDS[index % LABELS.len()]);
    let other = *pick(rng, &LABELS.iter().copied().filter(|&l| l != asked).collect::<Vec<_>>());
    let mut labels = [asked, other];
    labels.shuffle(rng);
    let fields: Vec<(&str, String)> = labels.iter().map(|&l| (l, value(l, rng))).collect();

    let u = tasks::unit(size) as i32;
    let s = size as i32;
    let mut canvas = Canvas::new(size, size, tasks::background(rng));
    let ink = tasks::ink(rng);
    let header = 4 * u;
    canvas.fill_rect(0, 0, s, header, pick(rng, &COLORS).1);
    canvas.stroke_rect(0, 0, s, s, u, ink);

    // A field is its caption, one unit of air, its value, and two units before the next.
    let caption = font::text_height(u as u32) as i32;
    let top = header + 2 * u;
    let rows = fields.len() as i32;
    let by_width = font::fit_scale("WWWW", (s - 6 * u) as u32) as i32;
    let by_height = ((s - 2 * u - top) / rows - caption - 3 * u) / font::GLYPH_H as i32;
    let vs = by_width.min(by_height).max(u);
    let pitch = caption + u + font::text_height(vs as u32) as i32 + 2 * u;
    let widest = fields.iter().map(|(_, v)| font::text_width(v, vs as u32) as i32).max().unwrap_or(0);
    // Inside the border with one unit of air; every field starts at the same x.
    let x = 2 * u + jitter(rng, s - 4 * u - widest);
    let y = top + jitter(rng, s - 2 * u - top - pitch * rows);
    for (i, (label, value)) in fields.iter().enumerate() {
        let row = y + i as i32 * pitch;
        canvas.text(x, row, label, u as u32, ink);
        canvas.text(x, row + caption + u, value, vs as u32, ink);
    }

    let answer = fields.iter().find(|(l, _)| *l == asked).map(|(_, v)| v.clone()).unwrap_or_default();
    Sample { image: canvas.into_image(), turns: vec![Turn::new(kind, format!("What is the {asked}?"), answer)] }
}
