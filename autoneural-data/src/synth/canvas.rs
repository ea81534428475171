//! An RGB drawing surface over [`image::RgbImage`]: rectangles, circles, triangles, thick
//! lines and bitmap text. Coordinates are signed pixels with the origin at the top left;
//! everything is clipped to the image, so callers may draw partly (or wholly) outside it.
//! Pixels are either painted or not (no anti-aliasing): the synthetic images stay exactly
//! reproducible and their colours stay within the named palette.

use image::{Rgb, RgbImage};

use super::font;

pub type Color = Rgb<u8>;

pub struct Canvas {
    img: RgbImage,
}

impl Canvas {
    /// A `width x height` canvas filled with `background`.
    pub fn new(width: u32, height: u32, background: Color) -> Self {
        Self { img: RgbImage::from_pixel(width, height, background) }
    }

    pub fn width(&self) -> i32 {
        self.img.width() as i32
    }

    pub fn height(&self) -> i32 {
        self.img.height() as i32
    }

    pub fn into_image(self) -> RgbImage {
        self.img
    }

    /// Paints one pixel if it lies inside the image.
    pub fn put(&mut self, x: i32, y: i32, color: Color) {
        if x >= 0 && y >= 0 && x < self.width() && y < self.height() {
            self.img.put_pixel(x as u32, y as u32, color);
        }
    }

    /// Fills the `w x h` rectangle whose top-left pixel is `(x, y)`.
    pub fn fill_rect(&mut self, x: i32, y: i32, w: i32, h: i32, color: Color) {
        let (x0, y0) = (x.max(0), y.max(0));
        let (x1, y1) = ((x + w).min(self.width()), (y + h).min(self.height()));
        for py in y0..y1 {
            for px in x0..x1 {
                self.img.put_pixel(px as u32, py as u32, color);
            }
        }
    }

    /// The outline of a rectangle, `thickness` pixels wide, drawn inside its bounds.
    pub fn stroke_rect(&mut self, x: i32, y: i32, w: i32, h: i32, thickness: i32, color: Color) {
        let t = thickness.max(1).min(w.min(h).max(1));
        self.fill_rect(x, y, w, t, color);
        self.fill_rect(x, y + h - t, w, t, color);
        self.fill_rect(x, y, t, h, color);
        self.fill_rect(x + w - t, y, t, h, color);
    }

    /// Fills the disc of radius `r` around pixel `(cx, cy)`.
    pub fn fill_circle(&mut self, cx: i32, cy: i32, r: i32, color: Color) {
        // `r * r + r` rounds the outline out a little, so small discs are not diamonds.
        let limit = r * r + r;
        for dy in -r..=r {
            for dx in -r..=r {
                if dx * dx + dy * dy <= limit {
                    self.put(cx + dx, cy + dy, color);
                }
            }
        }
    }

    /// Fills the triangle with corners `pts` (either winding): a pixel is inside when its
    /// centre is on the inner side of all three edges.
    pub fn fill_triangle(&mut self, pts: [(i32, i32); 3], color: Color) {
        let [a, b, c] = pts.map(|(x, y)| (x as f32, y as f32));
        let edge = |p: (f32, f32), q: (f32, f32), r: (f32, f32)| (q.0 - p.0) * (r.1 - p.1) - (q.1 - p.1) * (r.0 - p.0);
        let area = edge(a, b, c);
        if area == 0.0 {
            return;
        }
        let xs = pts.map(|p| p.0);
        let ys = pts.map(|p| p.1);
        let (x0, x1) = (xs.iter().min().copied().unwrap_or(0).max(0), xs.iter().max().copied().unwrap_or(0));
        let (y0, y1) = (ys.iter().min().copied().unwrap_or(0).max(0), ys.iter().max().copied().unwrap_or(0));
        for py in y0..=y1.min(self.height() - 1) {
            for px in x0..=x1.min(self.width() - 1) {
                let p = (px as f32 + 0.5, py as f32 + 0.5);
                let (w0, w1, w2) = (edge(b, c, p), edge(c, a, p), edge(a, b, p));
                let inside =
                    if area > 0.0 { w0 >= 0.0 && w1 >= 0.0 && w2 >= 0.0 } else { w0 <= 0.0 && w1 <= 0.0 && w2 <= 0.0 };
                if inside {
                    self.img.put_pixel(px as u32, py as u32, color);
                }
            }
        }
    }

    /// A straight line from `(x0, y0)` to `(x1, y1)` (Bresenham), each step stamped with a
    /// `thickness x thickness` square centred on the path.
    pub fn line(&mut self, (x0, y0): (i32, i32), (x1, y1): (i32, i32), thickness: i32, color: Color) {
        let t = thickness.max(1);
        let half = (t - 1) / 2;
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.fill_rect(x - half, y - half, t, t, color);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Draws one line of `text` with its top-left corner at `(x, y)`, each font pixel a
    /// `scale x scale` block. Characters the font lacks draw as hollow boxes.
    pub fn text(&mut self, x: i32, y: i32, text: &str, scale: u32, color: Color) {
        let s = scale.max(1) as i32;
        for (i, c) in text.chars().enumerate() {
            let left = x + i as i32 * font::ADVANCE as i32 * s;
            for (row, bits) in font::glyph_or_box(c).iter().enumerate() {
                for col in 0..font::GLYPH_W as i32 {
                    if bits & (1 << (font::GLYPH_W as i32 - 1 - col)) != 0 {
                        self.fill_rect(left + col * s, y + row as i32 * s, s, s, color);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLACK: Color = Rgb([0, 0, 0]);
    const WHITE: Color = Rgb([255, 255, 255]);

    fn painted(c: Canvas) -> usize {
        c.into_image().pixels().filter(|p| **p == BLACK).count()
    }

    #[test]
    fn shapes_clip_at_the_edges() {
        let mut c = Canvas::new(8, 8, WHITE);
        c.fill_rect(-4, -4, 6, 6, BLACK);
        assert_eq!(painted(c), 4);
        let mut c = Canvas::new(8, 8, WHITE);
        c.fill_circle(100, 100, 3, BLACK);
        c.fill_triangle([(-10, -10), (-5, -10), (-5, -3)], BLACK);
        c.line((-5, 3), (20, 3), 1, BLACK);
        assert_eq!(painted(c), 8);
    }

    #[test]
    fn triangle_winding_does_not_matter() {
        let mut a = Canvas::new(16, 16, WHITE);
        a.fill_triangle([(1, 1), (14, 1), (7, 14)], BLACK);
        let mut b = Canvas::new(16, 16, WHITE);
        b.fill_triangle([(7, 14), (14, 1), (1, 1)], BLACK);
        assert_eq!(a.into_image(), b.into_image());
    }

    #[test]
    fn text_scales() {
        let mut c = Canvas::new(20, 20, WHITE);
        c.text(0, 0, "I", 2, BLACK);
        // `I` has 3 + 5 + 3 = 11 lit font pixels, each 2x2.
        assert_eq!(painted(c), 44);
    }
}
