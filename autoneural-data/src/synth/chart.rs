//! `chart`: bar charts (three or four bars labelled with letters, integer values 1–9) and
//! line charts (four or five points, strictly rising or strictly falling).
//!
//! Layout: a plot area over a value axis 0–9 with a light grid line at every integer, so a
//! bar's value is the number of grid steps it spans; the baseline sits above a row for the
//! bar labels. The grid step is a whole number of pixels (5 at 64 px), so equal values
//! always draw equally tall.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::index;

use image::Rgb;

use super::canvas::Canvas;
use super::font;
use super::tasks::{self, COLORS, Sample, Turn, pick};

/// Letters bars are labelled with.
pub const BAR_LABELS: &str = "ABCDEFGH";
/// Largest value on the axis.
const MAX_VALUE: i32 = 9;
const GRID: Rgb<u8> = Rgb([210, 210, 210]);

/// Pixel geometry of the plot: the value axis runs from `baseline` (0) up by `step` per unit.
struct Plot {
    left: i32,
    right: i32,
    baseline: i32,
    step: i32,
}

impl Plot {
    fn new(size: u32) -> Self {
        let (u, s) = (tasks::unit(size) as i32, size as i32);
        let top = 3 * u;
        let baseline = s - 2 * u - font::text_height(u as u32) as i32 - 2 * u;
        Self { left: 3 * u, right: s - 3 * u, baseline, step: ((baseline - top) / MAX_VALUE).max(1) }
    }

    fn y(&self, value: i32) -> i32 {
        self.baseline - value * self.step
    }

    fn draw_axes(&self, canvas: &mut Canvas, u: i32, ink: Rgb<u8>) {
        for v in 1..=MAX_VALUE {
            canvas.fill_rect(self.left, self.y(v), self.right - self.left, 1, GRID);
        }
        canvas.fill_rect(self.left, self.baseline, self.right - self.left, u, ink);
        canvas.fill_rect(self.left, self.y(MAX_VALUE), u, self.baseline - self.y(MAX_VALUE) + u, ink);
    }
}

/// Every possible answer: values 1–9, bar labels, `up`, `down`.
pub fn answers() -> Vec<String> {
    let mut out: Vec<String> = (1..=MAX_VALUE).map(|v| v.to_string()).collect();
    out.extend(BAR_LABELS.chars().map(String::from));
    out.extend(["up".to_string(), "down".to_string()]);
    out
}

/// One `chart` sample; kinds rotate with `index`: bar value, highest bar, line trend.
pub fn generate(index: usize, size: u32, rng: &mut StdRng) -> Sample {
    let u = tasks::unit(size) as i32;
    let mut canvas = Canvas::new(size, size, tasks::background(rng));
    let ink = tasks::ink(rng);
    let plot = Plot::new(size);
    plot.draw_axes(&mut canvas, u, ink);
    let color = pick(rng, &COLORS).1;

    if index % 3 == 2 {
        let turn = line_chart(&mut canvas, &plot, u, color, rng);
        return Sample { image: canvas.into_image(), turns: vec![turn] };
    }

    let n = rng.random_range(3..=4usize);
    let mut picks = index::sample(rng, BAR_LABELS.len(), n).into_vec();
    picks.sort_unstable();
    let labels: Vec<String> = picks.iter().map(|&i| BAR_LABELS[i..i + 1].to_string()).collect();
    let target = rng.random_range(0..n);
    let (values, turn) = if index % 3 == 0 {
        let values: Vec<i32> = (0..n).map(|_| rng.random_range(1..=MAX_VALUE)).collect();
        let turn =
            Turn::new("bar_value", format!("What is the value of bar {}?", labels[target]), values[target].to_string());
        (values, turn)
    } else {
        // The highest bar is unique: every other bar is strictly lower.
        let top = rng.random_range(2..=MAX_VALUE);
        let values: Vec<i32> = (0..n).map(|i| if i == target { top } else { rng.random_range(1..top) }).collect();
        (values, Turn::new("bar_highest", "Which bar is highest?", labels[target].clone()))
    };

    let slot = (plot.right - plot.left - u) / n as i32;
    let bar = slot * 3 / 5;
    for (i, (label, &v)) in labels.iter().zip(&values).enumerate() {
        let x = plot.left + u + i as i32 * slot + (slot - bar) / 2;
        canvas.fill_rect(x, plot.y(v), bar, v * plot.step, color);
        let tx = x + bar / 2 - font::text_width(label, u as u32) as i32 / 2;
        canvas.text(tx, plot.baseline + 2 * u, label, u as u32, ink);
    }
    Sample { image: canvas.into_image(), turns: vec![turn] }
}

/// Draws a strictly monotone line of four or five points; the answer is its direction.
fn line_chart(canvas: &mut Canvas, plot: &Plot, u: i32, color: Rgb<u8>, rng: &mut StdRng) -> Turn {
    let n = rng.random_range(4..=5usize);
    let mut values: Vec<i32> = index::sample(rng, MAX_VALUE as usize, n).into_iter().map(|i| i as i32 + 1).collect();
    values.sort_unstable();
    let up = rng.random_bool(0.5);
    if !up {
        values.reverse();
    }
    let x0 = plot.left + 3 * u;
    let dx = (plot.right - 3 * u - x0) / (n as i32 - 1);
    let points: Vec<(i32, i32)> = values.iter().enumerate().map(|(i, &v)| (x0 + i as i32 * dx, plot.y(v))).collect();
    for pair in points.windows(2) {
        canvas.line(pair[0], pair[1], 2 * u, color);
    }
    for &(x, y) in &points {
        canvas.fill_circle(x, y, u + 1, color);
    }
    Turn::new("line_trend", "Is the line going up or down?", if up { "up" } else { "down" })
}
