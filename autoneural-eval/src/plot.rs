//! Line charts for reports, written as SVG by plotters (its SVG backend needs no font files:
//! text stays text, rendered by the viewer).

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// One line (or, with `points_only`, a set of markers), in data coordinates.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Markers without a line: reference figures (e.g. a paper's).
    pub points_only: bool,
}

impl Series {
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { name: name.into(), points, points_only: false }
    }

    pub fn markers(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { name: name.into(), points, points_only: true }
    }
}

/// A chart: title, axis labels and its series (non-finite points are left out).
#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// `(lo, hi)` of `values` with a margin; a unit span around a single value.
fn span(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return None;
    }
    let pad = if hi > lo { 0.05 * (hi - lo) } else { 1.0 };
    Some((lo - pad, hi + pad))
}

impl LineChart {
    /// Writes the chart to `path` as an 800x500 SVG.
    pub fn write_svg(&self, path: &Path) -> Result<()> {
        let series: Vec<Series> = self
            .series
            .iter()
            .map(|s| Series {
                points: s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect(),
                ..s.clone()
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        let all = || series.iter().flat_map(|s| s.points.iter().copied());
        let (Some(xs), Some(ys)) = (span(all().map(|p| p.0)), span(all().map(|p| p.1))) else {
            return Err(anyhow!("{}: nothing to plot (no finite points)", path.display()));
        };
        let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
            let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(56)
                .build_cartesian_2d(xs.0..xs.1, ys.0..ys.1)?;
            chart.configure_mesh().x_desc(&self.x_label).y_desc(&self.y_label).draw()?;
            for (i, s) in series.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let legend = if s.points_only {
                    chart.draw_series(s.points.iter().map(|&p| Cross::new(p, 6, color.stroke_width(2))))?
                } else {
                    chart.draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))?;
                    chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?
                };
                legend.label(&s.name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            }
            chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
            root.present()?;
            Ok(())
        };
        draw().map_err(|e| anyhow!("writing {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_every_series_and_skips_non_finite_points() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.svg");
        let chart = LineChart {
            title: "SQNR against bits".into(),
            x_label: "weight bits".into(),
            y_label: "SQNR (dB)".into(),
            series: vec![
                Series::line("mobilenet", vec![(4.0, 10.0), (8.0, 30.0), (16.0, f64::INFINITY)]),
                Series::markers("paper", vec![(8.0, 45.0)]),
            ],
        };
        chart.write_svg(&path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("mobilenet") && svg.contains("paper"), "{svg}");
        let empty = LineChart { series: vec![Series::line("x", vec![(1.0, f64::NAN)])], ..chart };
        assert!(empty.write_svg(&path).unwrap_err().to_string().contains("nothing to plot"));
    }
}
