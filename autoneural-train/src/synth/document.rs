//! `document`: a small form with two or three labelled fields, one per line
//! (`NAME: ANNA`, `CODE: 47`, `CITY: ROME`, `ROOM: B7`), and "What is the CODE?" → `47`.
//!
//! Layout: a coloured header band across the top, a one-unit border, then the field lines
//! left-aligned one below the other. Every line is at most ten characters, which is 59 px
//! at font scale 1, so the form fits a 64-pixel image; the font scale grows with the image
//! ([`tasks::unit`]), keeping the same proportions at 128 px and up.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::canvas::Canvas;
use super::font::{self, LINE_HEIGHT};
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
    let mut others: Vec<&str> = LABELS.iter().copied().filter(|&l| l != asked).collect();
    others.shuffle(rng);
    let mut labels = vec![asked];
    labels.extend(others.into_iter().take(rng.random_range(1..=2)));
    labels.shuffle(rng);
    let fields: Vec<(&str, String)> = labels.iter().map(|&l| (l, value(l, rng))).collect();

    let u = tasks::unit(size) as i32;
    let s = size as i32;
    let mut canvas = Canvas::new(size, size, tasks::background(rng));
    let ink = tasks::ink(rng);
    let header = 4 * u;
    canvas.fill_rect(0, 0, s, header, pick(rng, &COLORS).1);
    canvas.stroke_rect(0, 0, s, s, u, ink);

    let lines: Vec<String> = fields.iter().map(|(l, v)| format!("{l}: {v}")).collect();
    let widest = lines.iter().map(|l| font::text_width(l, u as u32) as i32).max().unwrap_or(0);
    let pitch = (LINE_HEIGHT as i32 + 2) * u;
    let block = pitch * lines.len() as i32 - 2 * u;
    // Inside the border with one unit of air; lines start at the same x.
    let x = 2 * u + jitter(rng, s - 4 * u - widest);
    let top = header + 2 * u;
    let y = top + jitter(rng, s - 2 * u - top - block);
    for (i, line) in lines.iter().enumerate() {
        canvas.text(x, y + i as i32 * pitch, line, u as u32, ink);
    }

    let answer = fields.iter().find(|(l, _)| *l == asked).map(|(_, v)| v.clone()).unwrap_or_default();
    Sample { image: canvas.into_image(), turns: vec![Turn::new(kind, format!("What is the {asked}?"), answer)] }
}
