//! `parking`: a stand-in for the paper's in-car data, in two scenes.
//!
//! - A parking sign: a coloured panel with `P<level>` in large white type over the slot
//!   (`B14`) in small type, on a grey post. "Which parking level?" → `2`,
//!   "Which slot?" → `B14`. Levels are 1–6, slots a letter A–F and a number 1–20.
//! - A top-down cabin: the car body (front at the top, marked by the windscreen and the
//!   steering wheel in front of the driver, left-hand drive), four seats in two rows.
//!   Occupied seats are dark with a head on them, empty seats are pale.
//!   "Which seat is occupied?" (exactly one is) → `driver` / `passenger` / `rear left` /
//!   `rear right`; "How many seats are occupied?" → `0`–`4`.

use image::Rgb;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::index;

use super::canvas::{Canvas, Color};
use super::font;
use super::tasks::{self, COLORS, Sample, Turn, jitter};

pub const MAX_LEVEL: u32 = 6;
pub const SLOT_LETTERS: &str = "ABCDEF";
pub const MAX_SLOT: u32 = 20;
/// Seats in drawing order: front row left to right, then rear row.
pub const SEATS: [&str; 4] = ["driver", "passenger", "rear left", "rear right"];

const WHITE: Color = Rgb([255, 255, 255]);
const POST: Color = Rgb([130, 130, 130]);
const BODY: Color = Rgb([150, 155, 165]);
const GLASS: Color = Rgb([170, 210, 240]);
const SEAT_EMPTY: Color = Rgb([225, 225, 225]);
const SEAT_TAKEN: Color = Rgb([45, 45, 55]);
const HEAD: Color = Rgb([230, 180, 140]);

/// Every possible answer: levels, slots, seats and occupant counts.
pub fn answers() -> Vec<String> {
    let mut out: Vec<String> = (1..=MAX_LEVEL).map(|v| v.to_string()).collect();
    out.extend(SLOT_LETTERS.chars().flat_map(|l| (1..=MAX_SLOT).map(move |n| format!("{l}{n}"))));
    out.extend(SEATS.iter().map(|s| s.to_string()));
    out.extend((0..=SEATS.len()).map(|n| n.to_string()));
    out
}

/// One `parking` sample; kinds rotate with `index`: level, slot, seat, occupant count.
pub fn generate(index: usize, size: u32, rng: &mut StdRng) -> Sample {
    match index % 4 {
        0 | 1 => sign(index % 4 == 0, size, rng),
        2 => {
            let seat = rng.random_range(0..SEATS.len());
            let image = cabin(&[seat], size, rng);
            Sample { image, turns: vec![Turn::new("seat", "Which seat is occupied?", SEATS[seat])] }
        }
        _ => {
            let n = rng.random_range(0..=SEATS.len());
            let occupied = index::sample(rng, SEATS.len(), n).into_vec();
            let image = cabin(&occupied, size, rng);
            Sample { image, turns: vec![Turn::new("occupants", "How many seats are occupied?", n.to_string())] }
        }
    }
}

fn sign(ask_level: bool, size: u32, rng: &mut StdRng) -> Sample {
    let level = rng.random_range(1..=MAX_LEVEL);
    let letter = SLOT_LETTERS.as_bytes()[rng.random_range(0..SLOT_LETTERS.len())] as char;
    let slot = format!("{letter}{}", rng.random_range(1..=MAX_SLOT));
    let big = format!("P{level}");

    let (u, s) = (tasks::unit(size) as i32, size as i32);
    let mut canvas = Canvas::new(size, size, tasks::background(rng));
    let (big_w, big_h) = (font::text_width(&big, 2 * u as u32) as i32, font::text_height(2 * u as u32) as i32);
    let (slot_w, slot_h) = (font::text_width(&slot, u as u32) as i32, font::text_height(u as u32) as i32);
    let w = big_w.max(slot_w) + 8 * u;
    let h = big_h + slot_h + 11 * u;
    let x = 2 * u + jitter(rng, s - 4 * u - w);
    let y = 2 * u + jitter(rng, s - 6 * u - h);
    // Sign colours dark enough for white type (not yellow).
    let panel = COLORS[[0, 1, 2, 4][rng.random_range(0..4)]].1;
    canvas.fill_rect(x + w / 2 - u, y + h, 2 * u, s - y - h, POST);
    canvas.fill_rect(x, y, w, h, panel);
    canvas.stroke_rect(x + u, y + u, w - 2 * u, h - 2 * u, u, WHITE);
    canvas.text(x + (w - big_w) / 2, y + 3 * u, &big, 2 * u as u32, WHITE);
    canvas.fill_rect(x + 3 * u, y + 4 * u + big_h, w - 6 * u, u, WHITE);
    canvas.text(x + (w - slot_w) / 2, y + 7 * u + big_h, &slot, u as u32, WHITE);

    let turn = if ask_level {
        Turn::new("level", "Which parking level?", level.to_string())
    } else {
        Turn::new("slot", "Which slot?", slot)
    };
    Sample { image: canvas.into_image(), turns: vec![turn] }
}

/// The cabin seen from above with `occupied` seats (indices into [`SEATS`]) taken.
fn cabin(occupied: &[usize], size: u32, rng: &mut StdRng) -> image::RgbImage {
    let s = size as f32;
    let px = |f: f32| (f * s).round() as i32;
    let mut canvas = Canvas::new(size, size, tasks::background(rng));
    let dx = jitter(rng, px(0.06)) - px(0.03);
    canvas.fill_rect(px(0.24) + dx, px(0.06), px(0.52), px(0.88), BODY);
    canvas.fill_rect(px(0.29) + dx, px(0.12), px(0.42), px(0.1), GLASS);
    // Steering wheel: a ring in front of the driver's seat.
    let (wheel_x, wheel_y, r) = (px(0.385) + dx, px(0.27), px(0.045).max(2));
    canvas.fill_circle(wheel_x, wheel_y, r, SEAT_TAKEN);
    canvas.fill_circle(wheel_x, wheel_y, (r - px(0.02).max(1)).max(1), BODY);
    let seat = px(0.17);
    for (i, _) in SEATS.iter().enumerate() {
        let x = px(if i % 2 == 0 { 0.3 } else { 0.53 }) + dx;
        let y = px(if i < 2 { 0.34 } else { 0.62 });
        if occupied.contains(&i) {
            canvas.fill_rect(x, y, seat, seat, SEAT_TAKEN);
            canvas.fill_circle(x + seat / 2, y + seat / 2, (seat / 4).max(1), HEAD);
        } else {
            canvas.fill_rect(x, y, seat, seat, SEAT_EMPTY);
        }
    }
    canvas.into_image()
}
