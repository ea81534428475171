//! `vqa` and `multi_turn`: scenes of one to four shapes (circle, square, triangle) in the
//! palette colours on a pale background, and questions about count, colour, position and
//! shape.
//!
//! Layout: a scene has four slots, `left`, `right`, `top` and `bottom`, centred at 22% /
//! 78% of the width (left, right) or height (top, bottom) and at the middle of the other
//! axis, like the arms of a plus sign. A shape fills at most one slot, is at most 20% of
//! the image wide, and moves at most 2% off its slot's centre, so shapes never overlap and
//! "Where is the square?" has exactly one answer. Colour and position questions name a
//! shape type present once; shape questions name a colour present once.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::canvas::Canvas;
use super::tasks::{self, COLORS, Sample, Turn, pick};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShapeKind {
    Circle,
    Square,
    Triangle,
}

const SHAPES: [ShapeKind; 3] = [ShapeKind::Circle, ShapeKind::Square, ShapeKind::Triangle];

impl ShapeKind {
    fn name(self) -> &'static str {
        match self {
            Self::Circle => "circle",
            Self::Square => "square",
            Self::Triangle => "triangle",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Left,
    Right,
    Top,
    Bottom,
}

const SLOTS: [Slot; 4] = [Slot::Left, Slot::Right, Slot::Top, Slot::Bottom];

impl Slot {
    fn name(self) -> &'static str {
        match self {
            Self::Left => "left",
            Self::Right => "right",
            Self::Top => "top",
            Self::Bottom => "bottom",
        }
    }

    /// Centre as fractions of (width, height).
    fn centre(self) -> (f32, f32) {
        match self {
            Self::Left => (0.22, 0.5),
            Self::Right => (0.78, 0.5),
            Self::Top => (0.5, 0.22),
            Self::Bottom => (0.5, 0.78),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    kind: ShapeKind,
    /// Index into [`COLORS`].
    color: usize,
    slot: Slot,
}

/// All answers a `vqa` or `multi_turn` turn can have.
pub const ANSWERS: &[&str] = &[
    "1", "2", "3", "4", "red", "green", "blue", "yellow", "purple", "left", "right", "top", "bottom", "circle",
    "square", "triangle",
];

struct Scene {
    shapes: Vec<Shape>,
}

impl Scene {
    /// `n` shapes in distinct slots; the first is `target` (in `target_slot` if given),
    /// the others satisfy `other_ok(kind, color)`.
    fn build(
        rng: &mut StdRng,
        n: usize,
        target: (ShapeKind, usize),
        target_slot: Option<Slot>,
        other_ok: impl Fn(ShapeKind, usize) -> bool,
    ) -> Self {
        let mut slots = SLOTS.to_vec();
        slots.shuffle(rng);
        if let Some(s) = target_slot {
            slots.retain(|&x| x != s);
            slots.insert(0, s);
        }
        let mut shapes = vec![Shape { kind: target.0, color: target.1, slot: slots[0] }];
        let options: Vec<(ShapeKind, usize)> = SHAPES
            .iter()
            .flat_map(|&k| (0..COLORS.len()).map(move |c| (k, c)))
            .filter(|&(k, c)| other_ok(k, c))
            .collect();
        for &slot in &slots[1..n.clamp(1, SLOTS.len())] {
            let (kind, color) = *pick(rng, &options);
            shapes.push(Shape { kind, color, slot });
        }
        Self { shapes }
    }

    fn count_kind(&self, kind: ShapeKind) -> usize {
        self.shapes.iter().filter(|s| s.kind == kind).count()
    }

    fn count_color(&self, color: usize) -> usize {
        self.shapes.iter().filter(|s| s.color == color).count()
    }

    /// Every question with a unique answer in this scene.
    fn questions(&self) -> Vec<Turn> {
        let mut out = vec![count_turn(self.shapes.len())];
        for s in &self.shapes {
            if self.count_kind(s.kind) == 1 {
                out.push(color_turn(s));
                out.push(position_turn(s));
            }
            if self.count_color(s.color) == 1 {
                out.push(shape_turn(s));
            }
        }
        out
    }

    fn draw(&self, size: u32, rng: &mut StdRng) -> Canvas {
        let mut canvas = Canvas::new(size, size, tasks::background(rng));
        let s = size as f32;
        let max_half = 0.1 * s;
        let shift = (0.02 * s).round() as i32;
        for shape in &self.shapes {
            let (fx, fy) = shape.slot.centre();
            let cx = (fx * s).round() as i32 + rng.random_range(-shift..=shift);
            let cy = (fy * s).round() as i32 + rng.random_range(-shift..=shift);
            let half = (max_half * rng.random_range(0.8..=1.0f32)).round().max(3.0) as i32;
            let color = COLORS[shape.color].1;
            match shape.kind {
                ShapeKind::Circle => canvas.fill_circle(cx, cy, half, color),
                ShapeKind::Square => canvas.fill_rect(cx - half, cy - half, 2 * half + 1, 2 * half + 1, color),
                ShapeKind::Triangle => canvas.fill_triangle(
                    [(cx, cy - half), (cx - half, cy + half + 1), (cx + half + 1, cy + half + 1)],
                    color,
                ),
            }
        }
        canvas
    }
}

fn count_turn(n: usize) -> Turn {
    Turn::new("count", "How many shapes are there?", n.to_string())
}

fn color_turn(s: &Shape) -> Turn {
    Turn::new("color", format!("What color is the {}?", s.kind.name()), COLORS[s.color].0)
}

fn position_turn(s: &Shape) -> Turn {
    Turn::new("position", format!("Where is the {}?", s.kind.name()), s.slot.name())
}

fn shape_turn(s: &Shape) -> Turn {
    Turn::new("shape", format!("What shape is {}?", COLORS[s.color].0), s.kind.name())
}

fn random_color(rng: &mut StdRng) -> usize {
    rng.random_range(0..COLORS.len())
}

/// One `vqa` sample; question kinds rotate with `index`: count, colour, position, shape.
pub fn generate(index: usize, size: u32, rng: &mut StdRng) -> Sample {
    let n = rng.random_range(1..=SLOTS.len());
    let (scene, turn) = match index % 4 {
        0 => {
            let target = (*pick(rng, &SHAPES), random_color(rng));
            let scene = Scene::build(rng, n, target, None, |_, _| true);
            (scene, count_turn(n))
        }
        1 => {
            let target = (*pick(rng, &SHAPES), random_color(rng));
            let scene = Scene::build(rng, n, target, None, |k, _| k != target.0);
            let turn = color_turn(&scene.shapes[0]);
            (scene, turn)
        }
        2 => {
            let target = (*pick(rng, &SHAPES), random_color(rng));
            let slot = *pick(rng, &SLOTS);
            let scene = Scene::build(rng, n, target, Some(slot), |k, _| k != target.0);
            let turn = position_turn(&scene.shapes[0]);
            (scene, turn)
        }
        _ => {
            let target = (*pick(rng, &SHAPES), random_color(rng));
            let scene = Scene::build(rng, n, target, None, |_, c| c != target.1);
            let turn = shape_turn(&scene.shapes[0]);
            (scene, turn)
        }
    };
    Sample { image: scene.draw(size, rng).into_image(), turns: vec![turn] }
}

/// One `multi_turn` sample: a scene with at least one shape type present once (so at least
/// count, colour and position are askable), and two or three distinct questions about it.
pub fn generate_multi_turn(size: u32, rng: &mut StdRng) -> Sample {
    let n = rng.random_range(1..=SLOTS.len());
    let target = (*pick(rng, &SHAPES), random_color(rng));
    let scene = Scene::build(rng, n, target, None, |k, _| k != target.0);
    let mut questions = scene.questions();
    questions.shuffle(rng);
    questions.truncate(rng.random_range(2..=3));
    Sample { image: scene.draw(size, rng).into_image(), turns: questions }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn asked_shapes_and_colours_are_unique() {
        let mut rng = StdRng::seed_from_u64(7);
        for index in 0..200 {
            let n = rng.random_range(1..=4);
            let target = (*pick(&mut rng, &SHAPES), random_color(&mut rng));
            let scene = Scene::build(&mut rng, n, target, None, |k, _| k != target.0);
            assert_eq!(scene.shapes.len(), n, "sample {index}");
            assert_eq!(scene.count_kind(target.0), 1);
            let mut slots: Vec<&str> = scene.shapes.iter().map(|s| s.slot.name()).collect();
            slots.sort();
            slots.dedup();
            assert_eq!(slots.len(), n, "two shapes share a slot");
            assert!(scene.questions().len() >= 3);
        }
    }
}
