//! Inline SVG charts for report.html: line charts on linear or log axes and
//! horizontal bar charts, drawn in Rust with no script. All text is escaped.

use std::fmt::Write as _;

/// A colour-blind-friendly categorical palette (Tableau 10).
pub const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// The colour of series number `i`.
pub fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// Escapes text for HTML and SVG (element content and attribute values).
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

/// How an axis maps values to pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    Linear,
    /// log10; values must be > 0.
    Log10,
}

/// An axis: range, ticks (value, label) and a label with its unit.
#[derive(Debug, Clone)]
pub struct Axis {
    pub label: String,
    pub scale: Scale,
    pub min: f64,
    pub max: f64,
    pub ticks: Vec<(f64, String)>,
}

impl Axis {
    /// A linear axis from 0 to a round number at or above `max`, with about
    /// five ticks labelled by `fmt`.
    pub fn linear_from_zero(label: &str, max: f64, fmt: impl Fn(f64) -> String) -> Self {
        let max = if max.is_finite() && max > 0.0 {
            max
        } else {
            1.0
        };
        let step = nice_step(max / 5.0);
        let top = (max / step).ceil() * step;
        let n = (top / step).round() as usize;
        let ticks = (0..=n)
            .map(|k| {
                let v = k as f64 * step;
                (v, fmt(v))
            })
            .collect();
        Self {
            label: label.into(),
            scale: Scale::Linear,
            min: 0.0,
            max: top,
            ticks,
        }
    }

    fn frac(&self, v: f64) -> f64 {
        let (a, b, v) = match self.scale {
            Scale::Linear => (self.min, self.max, v),
            Scale::Log10 => (
                self.min.max(1e-12).log10(),
                self.max.max(1e-12).log10(),
                v.max(1e-12).log10(),
            ),
        };
        if b > a { (v - a) / (b - a) } else { 0.0 }
    }
}

/// 1, 2, 2.5 or 5 times a power of ten, at least `raw`.
pub fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    let k = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 2.5 {
        2.5
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    k * p
}

/// A number without trailing zeros: 0, 2.5, 10, 1500.
pub fn num(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A count with a k/M suffix: 500, 2.5k, 20k, 1.2M.
pub fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", num((v / 1e6 * 100.0).round() / 100.0))
    } else if v >= 1e3 {
        format!("{}k", num((v / 1e3 * 10.0).round() / 10.0))
    } else {
        num(v)
    }
}

/// A unit for latencies in µs: the divisor and its name, chosen so the
/// largest value reads as a number below 1000.
pub fn latency_unit(max_us: f64) -> (f64, &'static str) {
    if max_us >= 1e6 {
        (1e6, "s")
    } else if max_us >= 1e3 {
        (1e3, "ms")
    } else {
        (1.0, "µs")
    }
}

/// One line of a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed without markers and left out of the legend: a fitted
    /// curve beside the measured series of the same colour.
    pub fit: bool,
}

/// A line chart.
#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    /// Vertical dashed markers (x, color), e.g. injected faults.
    pub markers: Vec<(f64, &'static str)>,
}

const W: f64 = 660.0;
const FONT: &str =
    "system-ui,-apple-system,'Segoe UI',Roboto,'Liberation Sans','DejaVu Sans',Arial,sans-serif";

/// Rough width of `s` in px at `size` px (no font metrics available).
fn text_w(s: &str, size: f64) -> f64 {
    s.chars().count() as f64 * size * 0.58
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Lays the legend out in rows; returns (items with x, y) and its height.
fn legend(series: &[(&str, &str)], left: f64, right: f64, top: f64) -> (String, f64) {
    let mut out = String::new();
    let (mut x, mut y) = (left, top);
    let row = 18.0;
    for (name, color) in series {
        let name = shorten(name, 48);
        let w = 22.0 + text_w(&name, 12.0) + 18.0;
        if x > left && x + w > right {
            x = left;
            y += row;
        }
        let _ = write!(
            out,
            r##"<g class="legend-item"><rect x="{:.1}" y="{:.1}" width="14" height="4" rx="1" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="12" fill="#333">{}</text></g>"##,
            x,
            y - 5.0,
            x + 20.0,
            y,
            esc(&name)
        );
        x += w;
    }
    let h = if series.is_empty() {
        0.0
    } else {
        y - top + row
    };
    (out, h)
}

fn open_svg(out: &mut String, h: f64, title: &str) {
    let _ = write!(
        out,
        r##"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {h:.0}" role="img" aria-label="{t}" font-family="{FONT}"><title>{t}</title><rect width="{W}" height="{h:.0}" fill="#fff"/><text x="16" y="24" font-size="15" font-weight="600" fill="#111">{t}</text>"##,
        t = esc(title)
    );
}

/// Renders a line chart as an SVG element.
pub fn line_chart(c: &LineChart) -> String {
    let (left, right) = (78.0, W - 24.0);
    let names: Vec<(&str, &str)> = c
        .series
        .iter()
        .filter(|s| !s.fit)
        .map(|s| (s.name.as_str(), s.color))
        .collect();
    let (leg, leg_h) = legend(&names, left, right, 46.0);
    let top = 46.0 + leg_h + 6.0;
    let plot_h = 250.0;
    let bottom = top + plot_h;
    let h = bottom + 52.0;
    let mut out = String::new();
    open_svg(&mut out, h, &c.title);
    out.push_str(&leg);
    let px = |v: f64| left + c.x.frac(v).clamp(0.0, 1.0) * (right - left);
    let py = |v: f64| bottom - c.y.frac(v).clamp(0.0, 1.0) * plot_h;
    // Grid and tick labels.
    for (v, l) in &c.y.ticks {
        let y = py(*v);
        let _ = write!(
            out,
            r##"<line x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#e6e6e6"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#555" text-anchor="end">{}</text>"##,
            left - 8.0,
            y + 4.0,
            esc(l)
        );
    }
    for (v, l) in &c.x.ticks {
        let x = px(*v);
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#f0f0f0"/><line x1="{x:.1}" y1="{bottom}" x2="{x:.1}" y2="{:.1}" stroke="#555"/><text x="{x:.1}" y="{:.1}" font-size="11" fill="#555" text-anchor="middle">{}</text>"##,
            bottom + 5.0,
            bottom + 18.0,
            esc(l)
        );
    }
    let _ = write!(
        out,
        r##"<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#555"/><line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#555"/>"##
    );
    let _ = write!(
        out,
        r##"<text x="{:.1}" y="{:.1}" font-size="12" fill="#333" text-anchor="middle">{}</text><text transform="translate(18 {:.1}) rotate(-90)" font-size="12" fill="#333" text-anchor="middle">{}</text>"##,
        (left + right) / 2.0,
        bottom + 40.0,
        esc(&c.x.label),
        (top + bottom) / 2.0,
        esc(&c.y.label)
    );
    // Markers under the series.
    for &(x, color) in &c.markers {
        if x.is_finite() {
            let x = px(x);
            let _ = write!(
                out,
                r##"<line class="marker" x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="{color}" stroke-width="1" stroke-dasharray="3 3" opacity="0.4"/>"##
            );
        }
    }
    // Series.
    for s in &c.series {
        let pts: Vec<String> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            out,
            r##"<g class="{}"><title>{}</title><polyline fill="none" stroke="{}" stroke-width="{}" stroke-linejoin="round" stroke-linecap="round"{} points="{}"/>"##,
            if s.fit { "fit" } else { "series" },
            esc(&s.name),
            s.color,
            if s.fit { "1.6" } else { "2.2" },
            if s.fit {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            },
            pts.join(" ")
        );
        if pts.len() <= 80 && !s.fit {
            for p in &pts {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = write!(
                    out,
                    r##"<circle cx="{x}" cy="{y}" r="2.8" fill="{}" stroke="#fff" stroke-width="0.8"/>"##,
                    s.color
                );
            }
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    out
}

/// One bar of a bar chart.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub text: String,
    pub color: &'static str,
    /// A whisker from min to max (e.g. across a group's hosts).
    pub range: Option<(f64, f64)>,
}

/// A horizontal bar chart: one bar per row, value printed at its end.
pub fn bar_chart(
    title: &str,
    axis_label: &str,
    bars: &[Bar],
    fmt: impl Fn(f64) -> String,
) -> String {
    let label_w = bars
        .iter()
        .map(|b| text_w(&shorten(&b.label, 40), 12.0))
        .fold(60.0, f64::max)
        .min(300.0);
    let (left, right) = (16.0 + label_w + 10.0, W - 90.0);
    let top = 44.0;
    let row = 26.0;
    let bottom = top + row * bars.len().max(1) as f64 + 6.0;
    let h = bottom + 46.0;
    let max = bars
        .iter()
        .map(|b| b.range.map_or(b.value, |r| r.1.max(b.value)))
        .fold(0.0, f64::max);
    let axis = Axis::linear_from_zero(axis_label, max, fmt);
    let px = |v: f64| left + axis.frac(v).clamp(0.0, 1.0) * (right - left);
    let mut out = String::new();
    open_svg(&mut out, h, title);
    for (v, l) in &axis.ticks {
        let x = px(*v);
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#e6e6e6"/><text x="{x:.1}" y="{:.1}" font-size="11" fill="#555" text-anchor="middle">{}</text>"##,
            bottom + 16.0,
            esc(l)
        );
    }
    for (i, b) in bars.iter().enumerate() {
        let y = top + 4.0 + i as f64 * row;
        let x1 = px(b.value.max(0.0));
        // The value is written past the bar and its whisker.
        let text_x = b.range.map_or(x1, |r| x1.max(px(r.1.max(0.0)))) + 6.0;
        let _ = write!(
            out,
            r##"<g class="bar"><title>{full}: {text}</title><text x="{:.1}" y="{:.1}" font-size="12" fill="#333" text-anchor="end">{}</text><rect x="{left}" y="{y:.1}" width="{:.1}" height="{:.1}" rx="2" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="12" fill="#222">{text}</text></g>"##,
            left - 8.0,
            y + row / 2.0 + 1.0,
            esc(&shorten(&b.label, 40)),
            (x1 - left).max(1.0),
            row - 8.0,
            b.color,
            text_x,
            y + row / 2.0 + 1.0,
            full = esc(&b.label),
            text = esc(&b.text),
        );
        if let Some((lo, hi)) = b.range {
            let (x0, x1, ym) = (px(lo.max(0.0)), px(hi.max(0.0)), y + row / 2.0 - 4.0);
            let _ = write!(
                out,
                r##"<g class="whisker" stroke="#222" stroke-width="1.2"><line x1="{x0:.1}" y1="{ym:.1}" x2="{x1:.1}" y2="{ym:.1}"/><line x1="{x0:.1}" y1="{:.1}" x2="{x0:.1}" y2="{:.1}"/><line x1="{x1:.1}" y1="{:.1}" x2="{x1:.1}" y2="{:.1}"/></g>"##,
                ym - 5.0,
                ym + 5.0,
                ym - 5.0,
                ym + 5.0
            );
        }
    }
    let _ = write!(
        out,
        r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#555"/><text x="{:.1}" y="{:.1}" font-size="12" fill="#333" text-anchor="middle">{}</text></svg>"##,
        (left + right) / 2.0,
        bottom + 36.0,
        esc(axis_label)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_numbers() {
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(0.13), 0.2);
        assert_eq!(nice_step(1000.0), 1000.0);
        assert_eq!(nice_step(0.204), 0.25);
        assert_eq!(num(2.5), "2.5");
        assert_eq!(num(10.0), "10");
        assert_eq!(si(22_600.0), "22.6k");
        assert_eq!(si(1_200_000.0), "1.2M");
        let a = Axis::linear_from_zero("x", 23.0, num);
        assert_eq!(a.max, 25.0);
        assert_eq!(a.ticks.first().unwrap().1, "0");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<script>\"a\" & 'b'"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;"
        );
        let svg = bar_chart(
            "t<",
            "jobs/s",
            &[Bar {
                label: "<img src=x>".into(),
                value: 1.0,
                text: "1".into(),
                color: color(0),
                range: None,
            }],
            num,
        );
        assert!(!svg.contains("<img"));
        assert!(svg.contains("&lt;img src=x&gt;"));
    }
}
