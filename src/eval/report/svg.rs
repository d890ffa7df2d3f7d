//! The cost (x) vs accuracy (y) plot: every single model, the random router and the oracle as
//! points, the learned policy (and the priors-only policy) marked, and the line of random mixes
//! of the cheapest and the best model that routing should beat.
//!
//! Hand-written SVG rather than a plotting crate: a dozen points need no plotting library, and
//! what matters here — labels that never overlap, moved to the nearest free line — is ours to
//! write either way (plotters places labels where told).

use std::fmt::Write as _;

use super::Report;
use super::text::{pct, usd};

/// One plotted point.
struct Point<'a> {
    name: &'a str,
    cost: f64,
    accuracy: f64,
    color: &'static str,
}

/// The canvas and the data-to-pixel scales.
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    max_cost: f64,
    lo: f64,
    hi: f64,
}

impl Frame {
    fn fit(points: &[Point<'_>]) -> Self {
        let max_cost = points.iter().map(|p| p.cost).fold(0.0, f64::max).max(1e-9) * 1.05;
        let (min_acc, max_acc) = points.iter().fold((1.0f64, 0.0f64), |(lo, hi), p| {
            (lo.min(p.accuracy), hi.max(p.accuracy))
        });
        let lo = (min_acc - 0.05).max(0.0);
        Self {
            w: 900.0,
            h: 520.0,
            left: 70.0,
            right: 40.0,
            top: 40.0,
            bottom: 50.0,
            max_cost,
            lo,
            hi: (max_acc + 0.05).min(1.0).max(lo + 0.01),
        }
    }

    fn x(&self, cost: f64) -> f64 {
        self.left + (cost / self.max_cost) * (self.w - self.left - self.right)
    }

    fn y(&self, accuracy: f64) -> f64 {
        self.top
            + (1.0 - (accuracy - self.lo) / (self.hi - self.lo)) * (self.h - self.top - self.bottom)
    }
}

/// A placed label: its x extent and baseline.
type Placed = (f64, f64, f64);

pub fn svg(r: &Report) -> String {
    let points = points(r);
    let f = Frame::fit(&points);
    let mut s = String::new();
    axes(&mut s, &f, r);
    // Labels are placed greedily (the mix line's, then the learned policy's, …); one that would
    // overlap an earlier label moves to the nearest free line above or below.
    let mut placed: Vec<Placed> = Vec::new();
    mix_line(&mut s, &f, r, &mut placed);
    for p in points.iter().rev() {
        point(&mut s, &f, p, &mut placed);
    }
    s.push_str("</svg>\n");
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn points(r: &Report) -> Vec<Point<'_>> {
    let point = |name, cost, accuracy, color| Point {
        name,
        cost,
        accuracy,
        color,
    };
    let mut points: Vec<Point<'_>> = r
        .singles
        .iter()
        .map(|s| point(s.name.as_str(), s.cost_usd, s.accuracy, "#4a78c2"))
        .collect();
    points.push(point(
        "random",
        r.random.cost_usd,
        r.random.accuracy,
        "#999999",
    ));
    points.push(point(
        "oracle",
        r.oracle.cost_usd,
        r.oracle.accuracy,
        "#2e9e4f",
    ));
    if let Some(p) = &r.prior_policy {
        points.push(point("priors only", p.cost_usd, p.accuracy, "#e0a030"));
    }
    // The other strategies on the same policy (the report's own is "learned policy").
    for f in r.frontier.iter().filter(|f| f.strategy != r.strategy) {
        points.push(point(
            f.row.name.as_str(),
            f.row.cost_usd,
            f.row.accuracy,
            "#f08080",
        ));
    }
    points.push(point(
        "learned policy",
        r.policy.cost_usd,
        r.policy.accuracy,
        "#d62728",
    ));
    points
}

/// The opening tag, background, title, axes, ticks and axis titles.
fn axes(s: &mut String, f: &Frame, r: &Report) {
    let (w, h, left) = (f.w, f.h, f.left);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="22" font-size="14">{} — cost vs accuracy on {} held-out prompts</text>"#,
        esc(&r.dataset),
        r.test_prompts
    );
    let (x0, x1, y0, y1) = (f.left, f.w - f.right, f.top, f.h - f.bottom);
    let _ = writeln!(
        s,
        r##"<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="#333"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>"##
    );
    for i in 0..=4 {
        let c = f.max_cost * f64::from(i) / 4.0;
        let a = f.lo + (f.hi - f.lo) * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
            f.x(c),
            y1 + 18.0,
            esc(&usd(c)),
            x0 - 6.0,
            f.y(a) + 4.0,
            pct(a)
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">total cost (USD)</text><text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">accuracy</text>"##,
        (x0 + x1) / 2.0,
        h - 10.0,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0
    );
}

/// The random mix of the cheapest and the best single model: routing should beat this line.
fn mix_line(s: &mut String, f: &Frame, r: &Report, placed: &mut Vec<Placed>) {
    let single = |name: &str| r.singles.iter().find(|s| s.name == name);
    let (Some(c), Some(b)) = (single(&r.cheapest_single), single(&r.best_single)) else {
        return;
    };
    let (lx, ly) = (
        (f.x(c.cost_usd) + f.x(b.cost_usd)) / 2.0,
        (f.y(c.accuracy) + f.y(b.accuracy)) / 2.0 + 16.0,
    );
    let _ = writeln!(
        s,
        r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="5,4"/><text x="{lx:.1}" y="{ly:.1}" fill="#777" font-size="11">random mix of cheapest and best</text>"##,
        f.x(c.cost_usd),
        f.y(c.accuracy),
        f.x(b.cost_usd),
        f.y(b.accuracy),
    );
    placed.push((lx, lx + 6.0 * 31.0, ly));
}

/// A point's marker and its label, on the nearest line free of earlier labels.
fn point(s: &mut String, f: &Frame, p: &Point<'_>, placed: &mut Vec<Placed>) {
    let (px, py, color) = (f.x(p.cost), f.y(p.accuracy), p.color);
    // Labels of points in the right half go to their left, so they stay on the canvas.
    let (lx, anchor) = if px > (f.left + f.w - f.right) / 2.0 {
        (px - 9.0, "end")
    } else {
        (px + 9.0, "start")
    };
    let label = format!(
        "{} ({}, {})",
        esc(p.name),
        pct(p.accuracy),
        esc(&usd(p.cost))
    );
    let width = 6.5 * label.chars().count() as f64;
    let (lx0, lx1) = if anchor == "end" {
        (lx - width, lx)
    } else {
        (lx, lx + width)
    };
    let free = |ly: f64| {
        !placed
            .iter()
            .any(|(a0, a1, y0)| (ly - y0).abs() < 13.0 && lx0 < *a1 && *a0 < lx1)
    };
    let ly = (0..40)
        .map(|i| {
            let step = f64::from((i + 1) / 2) * 13.0;
            if i % 2 == 0 {
                py + 4.0 + step
            } else {
                py + 4.0 - step
            }
        })
        .find(|ly| free(*ly))
        .unwrap_or(py + 4.0);
    placed.push((lx0, lx1, ly));
    let marker = if p.name.starts_with("learned policy") {
        format!(
            r#"<path d="M {px:.1} {:.1} L {:.1} {:.1} L {:.1} {:.1} Z" fill="{color}"/>"#,
            py - 8.0,
            px + 7.0,
            py + 5.0,
            px - 7.0,
            py + 5.0
        )
    } else {
        format!(r#"<circle cx="{px:.1}" cy="{py:.1}" r="5" fill="{color}"/>"#)
    };
    let _ = writeln!(
        s,
        r#"{marker}<text x="{lx:.1}" y="{ly:.1}" text-anchor="{anchor}" fill="{color}">{label}</text>"#
    );
}
