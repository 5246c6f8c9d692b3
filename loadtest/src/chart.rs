//! A self-contained chart of a run: the latency distribution as a percentile
//! curve, and per-second counts over time. SVG, or an HTML page holding the
//! SVG and the summary table (no script, nothing fetched).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;

use crate::progress::{Counters, Timeline};

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 320.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 30.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 50.0;
/// The percentile axis ends at 99.999 % (five nines).
const NINES: f64 = 5.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// A per-second count shown over time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Series {
    pub(crate) label: &'static str,
    pub(crate) value: fn(&Counters) -> u64,
}

/// What a chart shows.
#[derive(Debug)]
pub(crate) struct Chart<'a> {
    pub(crate) title: String,
    /// A latency distribution in microseconds and what it measures.
    pub(crate) latency: Option<(&'static str, &'a Histogram<u64>)>,
    pub(crate) timeline: &'a Timeline,
    pub(crate) series: Vec<Series>,
}

impl Chart<'_> {
    /// Writes the chart to `path`: SVG for `.svg`, HTML for `.html`/`.htm`,
    /// the latter with `table` (the text report) under the chart.
    pub(crate) fn write(&self, path: &Path, table: &str) -> anyhow::Result<()> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let content = match extension.as_deref() {
            Some("svg") => self.svg(),
            Some("html" | "htm") => self.html(table),
            _ => bail!(
                "--chart {}: the file must end in .svg or .html",
                path.display()
            ),
        };
        std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))
    }

    pub(crate) fn html(&self, table: &str) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>{title}</title>\n\
             <style>body{{font-family:sans-serif;margin:2em;}}pre{{background:#f6f6f6;padding:1em;}}</style>\n\
             </head>\n<body>\n<h1>{title}</h1>\n{svg}\n<pre>{table}</pre>\n</body>\n</html>\n",
            title = escape(&self.title),
            svg = self.svg(),
            table = escape(table)
        )
    }

    pub(crate) fn svg(&self) -> String {
        let panels = 1 + usize::from(self.latency.is_some());
        let height = PANEL_HEIGHT * panels as f64 + 40.0;
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="24" font-size="16" text-anchor="middle">{}</text>"#,
            WIDTH / 2.0,
            escape(&self.title)
        );
        let mut top = 40.0;
        if let Some((label, histogram)) = self.latency {
            self.latency_panel(&mut out, top, label, histogram);
            top += PANEL_HEIGHT;
        }
        self.timeline_panel(&mut out, top);
        out.push_str("</svg>\n");
        out
    }

    fn latency_panel(&self, out: &mut String, top: f64, label: &str, histogram: &Histogram<u64>) {
        let mut points = Vec::new();
        if !histogram.is_empty() {
            // 0, 0.9, 0.99 … in tenths of a nine, then the maximum at the end.
            for step in 0..=(NINES * 10.0) as u32 {
                let nines = f64::from(step) / 10.0;
                let quantile = 1.0 - 10f64.powf(-nines);
                let ms = histogram.value_at_quantile(quantile) as f64 / 1000.0;
                points.push((nines, ms));
            }
        }
        let y_max = nice_max(points.iter().map(|p| p.1).fold(0.0, f64::max));
        let frame = Frame::new(top, NINES, y_max);
        frame.axes(
            out,
            &format!("{label}: latency by percentile"),
            "percentile",
            "ms",
        );
        for (nines, text) in ["0 %", "90 %", "99 %", "99.9 %", "99.99 %", "99.999 %"]
            .into_iter()
            .enumerate()
        {
            frame.x_tick(out, frame.x(nines as f64), text);
        }
        frame.y_ticks(out, y_max, |v| format!("{v}"));
        frame.polyline(out, &points, COLOURS[0]);
        if !histogram.is_empty() {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">max {:.3} ms over {} samples</text>"#,
                WIDTH - MARGIN_RIGHT,
                top + MARGIN_TOP - 8.0,
                histogram.max() as f64 / 1000.0,
                histogram.len()
            );
        }
    }

    fn timeline_panel(&self, out: &mut String, top: f64) {
        let seconds = self.timeline.seconds.len();
        let x_max = seconds.saturating_sub(1).max(1) as f64;
        let y_max = nice_max(
            self.series
                .iter()
                .flat_map(|s| self.timeline.seconds.iter().map(s.value))
                .max()
                .unwrap_or(0) as f64,
        );
        let frame = Frame::new(top, x_max, y_max);
        frame.axes(out, "per second over the run", "seconds", "per second");
        let step = (x_max / 10.0).ceil().max(1.0);
        let mut t = 0.0;
        while t <= x_max {
            frame.x_tick(out, frame.x(t), &format!("{t}"));
            t += step;
        }
        frame.y_ticks(out, y_max, |v| format!("{v:.0}"));
        for (i, series) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points: Vec<(f64, f64)> = self
                .timeline
                .seconds
                .iter()
                .enumerate()
                .map(|(t, c)| (t as f64, (series.value)(c) as f64))
                .collect();
            frame.polyline(out, &points, colour);
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" fill="{colour}">{}</text>"#,
                MARGIN_LEFT + 10.0 + 160.0 * i as f64,
                top + MARGIN_TOP - 8.0,
                escape(series.label)
            );
        }
    }
}

/// The plot area of one panel and its scales.
#[derive(Debug, Clone, Copy)]
struct Frame {
    top: f64,
    x_max: f64,
    y_max: f64,
}

impl Frame {
    fn new(top: f64, x_max: f64, y_max: f64) -> Self {
        Self {
            top,
            x_max: x_max.max(f64::EPSILON),
            y_max: y_max.max(f64::EPSILON),
        }
    }

    fn left(&self) -> f64 {
        MARGIN_LEFT
    }
    fn right(&self) -> f64 {
        WIDTH - MARGIN_RIGHT
    }
    fn plot_top(&self) -> f64 {
        self.top + MARGIN_TOP
    }
    fn bottom(&self) -> f64 {
        self.top + PANEL_HEIGHT - MARGIN_BOTTOM
    }

    fn x(&self, value: f64) -> f64 {
        self.left() + (self.right() - self.left()) * value / self.x_max
    }

    fn y(&self, value: f64) -> f64 {
        self.bottom() - (self.bottom() - self.plot_top()) * value / self.y_max
    }

    fn axes(&self, out: &mut String, title: &str, x_label: &str, y_label: &str) {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="14">{}</text>"#,
            self.left(),
            self.top + 16.0,
            escape(title)
        );
        let _ = writeln!(
            out,
            r##"<path d="M{l:.1},{t:.1} V{b:.1} H{r:.1}" fill="none" stroke="#333"/>"##,
            l = self.left(),
            t = self.plot_top(),
            b = self.bottom(),
            r = self.right()
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            (self.left() + self.right()) / 2.0,
            self.bottom() + 38.0,
            escape(x_label)
        );
        let _ = writeln!(
            out,
            r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
            (self.plot_top() + self.bottom()) / 2.0,
            (self.plot_top() + self.bottom()) / 2.0,
            escape(y_label)
        );
    }

    fn x_tick(&self, out: &mut String, x: f64, text: &str) {
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{b:.1}" x2="{x:.1}" y2="{t:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            self.bottom() + 16.0,
            escape(text),
            b = self.bottom(),
            t = self.plot_top()
        );
    }

    fn y_ticks(&self, out: &mut String, y_max: f64, text: impl Fn(f64) -> String) {
        for i in 0..=4 {
            let value = y_max * f64::from(i) / 4.0;
            let y = self.y(value);
            let _ = writeln!(
                out,
                r##"<line x1="{l:.1}" y1="{y:.1}" x2="{r:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                self.left() - 6.0,
                y + 4.0,
                escape(&text(value)),
                l = self.left(),
                r = self.right()
            );
        }
    }

    fn polyline(&self, out: &mut String, points: &[(f64, f64)], colour: &str) {
        if points.is_empty() {
            return;
        }
        let coordinates = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", self.x(*x), self.y(*y)))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            r#"<polyline points="{coordinates}" fill="none" stroke="{colour}" stroke-width="2"/>"#
        );
    }
}

/// A round upper bound for an axis: 1, 2 or 5 times a power of ten.
fn nice_max(value: f64) -> f64 {
    if !value.is_finite() || value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|bound| *bound >= value)
        .unwrap_or(10.0 * magnitude)
}

/// Escapes text for XML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::latency_histogram;

    /// Checks that every element is closed in order (a small well-formedness
    /// test: balanced tags, quoted attributes, no stray `<` or `&`).
    fn assert_well_formed(document: &str) {
        let body = document
            .strip_prefix("<!DOCTYPE html>\n")
            .unwrap_or(document);
        let mut open: Vec<String> = Vec::new();
        let mut rest = body;
        while let Some(start) = rest.find('<') {
            let text = &rest[..start];
            assert!(!text.contains('>'), "stray > in {text:?}");
            for entity in text.split('&').skip(1) {
                assert!(
                    ["amp;", "lt;", "gt;", "quot;", "#39;"]
                        .iter()
                        .any(|e| entity.starts_with(e)),
                    "bad entity in {text:?}"
                );
            }
            let end = rest[start..].find('>').expect("unclosed tag") + start;
            let tag = &rest[start + 1..end];
            assert_eq!(
                tag.matches('"').count() % 2,
                0,
                "unbalanced quotes in <{tag}>"
            );
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop().as_deref(), Some(name), "mismatched </{name}>");
            } else if !tag.ends_with('/') && tag != "meta charset=\"utf-8\"" {
                let name = tag.split_whitespace().next().unwrap();
                open.push(name.to_owned());
            }
            rest = &rest[end + 1..];
        }
        assert!(open.is_empty(), "unclosed elements {open:?}");
    }

    fn sample_chart<'a>(histogram: &'a Histogram<u64>, timeline: &'a Timeline) -> Chart<'a> {
        Chart {
            title: "fanout <1000 subscribers> & friends".into(),
            latency: Some(("publish → delivery", histogram)),
            timeline,
            series: vec![Series {
                label: "deliveries/s",
                value: |c| c.delivered,
            }],
        }
    }

    #[test]
    fn the_svg_is_well_formed_and_holds_the_data() {
        let mut histogram = latency_histogram();
        for micros in 1..=10_000 {
            histogram.record(micros).unwrap();
        }
        let mut timeline = Timeline::default();
        for (s, n) in [(100, 10), (101, 2000), (102, 1000)] {
            timeline.add(
                s,
                Counters {
                    delivered: n,
                    ..Counters::default()
                },
            );
        }
        let chart = sample_chart(&histogram, &timeline);
        let svg = chart.svg();
        assert_well_formed(&svg);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains("fanout &lt;1000 subscribers&gt; &amp; friends"));
        // Two significant digits: the maximum is within 1 %.
        assert!(
            svg.contains("max 10.0") && svg.contains(" ms over 10000 samples"),
            "{svg}"
        );
        assert!(svg.contains(">99.9 %<"), "{svg}");
        // One curve per panel; the throughput curve has one point per second.
        let polylines: Vec<&str> = svg.matches("<polyline points=\"").collect();
        assert_eq!(polylines.len(), 2);
        let last = svg.rsplit("<polyline points=\"").next().unwrap();
        let points = last.split('"').next().unwrap();
        assert_eq!(points.split(' ').count(), 3);
        // The peak (2000/s) reaches the top of the 2000 axis.
        assert!(svg.contains(">2000<"), "{svg}");

        let html = chart.html("  deliveries/s  1000 <ok>");
        assert_well_formed(&html);
        assert!(html.contains("<svg"));
        assert!(html.contains("deliveries/s  1000 &lt;ok&gt;"));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn an_empty_run_still_draws() {
        let histogram = latency_histogram();
        let timeline = Timeline::default();
        let svg = sample_chart(&histogram, &timeline).svg();
        assert_well_formed(&svg);
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(2000.0), 2000.0);
        assert_eq!(nice_max(2001.0), 5000.0);
    }

    #[test]
    fn the_file_type_follows_the_extension() {
        let histogram = latency_histogram();
        let timeline = Timeline::default();
        let chart = sample_chart(&histogram, &timeline);
        let dir = std::env::temp_dir().join(format!("ferrocast-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        chart.write(&dir.join("a.svg"), "t").unwrap();
        chart.write(&dir.join("a.html"), "t").unwrap();
        assert!(std::fs::read_to_string(dir.join("a.svg"))
            .unwrap()
            .starts_with("<svg"));
        assert!(std::fs::read_to_string(dir.join("a.html"))
            .unwrap()
            .starts_with("<!DOCTYPE html>"));
        assert!(chart.write(&dir.join("a.png"), "t").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
