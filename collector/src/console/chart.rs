//! Charts as SVG drawn on the server: bars, horizontal lines, a shaded span. No script: every
//! chart's numbers are also a table beside it.

use std::fmt::Write as _;

use tally_common::bandwidth::Bandwidth;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 78.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 8.0;

/// One bar: its label on the x axis (shown every `label_every` bars) and its CSS class.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub value: u64,
    pub class: &'static str,
}

/// A horizontal line across the chart (a licensed capacity, a P95).
#[derive(Debug, Clone)]
pub struct Line {
    pub value: u64,
    pub class: &'static str,
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct Chart {
    /// Read by screen readers.
    pub title: String,
    pub bars: Vec<Bar>,
    pub lines: Vec<Line>,
    /// Bars `[from, to)` drawn on a shaded band (outside the month's window, say).
    pub shaded: Option<(usize, usize)>,
    pub label_every: usize,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Chart {
    /// The chart as an `<svg>` element, bit rates on a linear axis from 0.
    pub fn svg(&self) -> String {
        let top_value = self.bars.iter().map(|b| b.value).chain(self.lines.iter().map(|l| l.value)).max().unwrap_or(0);
        let scale = (top_value as f64 * 1.1).max(1.0);
        let plot_h = HEIGHT - TOP - BOTTOM;
        let y = |v: u64| TOP + plot_h - v as f64 / scale * plot_h;
        let slot = (WIDTH - LEFT) / self.bars.len().max(1) as f64;
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
            escape(&self.title)
        );
        if let Some((from, to)) = self.shaded.filter(|(from, to)| from < to) {
            let _ = write!(
                svg,
                r#"<rect class="shade" x="{:.1}" y="{TOP}" width="{:.1}" height="{plot_h}"/>"#,
                LEFT + from as f64 * slot,
                (to - from) as f64 * slot
            );
        }
        for tick in 0..=4u64 {
            let value = (scale / 1.1 * tick as f64 / 4.0) as u64;
            let _ = write!(
                svg,
                r#"<line class="grid" x1="{LEFT}" x2="{WIDTH}" y1="{0:.1}" y2="{0:.1}"/><text x="{1}" y="{2:.1}" text-anchor="end">{3}</text>"#,
                y(value),
                LEFT - 4.0,
                y(value) + 4.0,
                Bandwidth(value)
            );
        }
        for (i, bar) in self.bars.iter().enumerate() {
            let x = LEFT + i as f64 * slot;
            let _ = write!(
                svg,
                r#"<rect class="bar {}" x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}"><title>{}: {}</title></rect>"#,
                bar.class,
                x + slot * 0.1,
                y(bar.value),
                (slot * 0.8).max(0.5),
                TOP + plot_h - y(bar.value),
                escape(&bar.label),
                Bandwidth(bar.value)
            );
            if self.label_every > 0 && i % self.label_every == 0 {
                let _ = write!(
                    svg,
                    r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                    x + slot / 2.0,
                    HEIGHT - 6.0,
                    escape(&bar.label)
                );
            }
        }
        for line in &self.lines {
            let _ = write!(
                svg,
                r#"<line class="line {0}" x1="{LEFT}" x2="{WIDTH}" y1="{1:.1}" y2="{1:.1}"><title>{2}: {3}</title></line>"#,
                line.class,
                y(line.value),
                escape(&line.label),
                Bandwidth(line.value)
            );
        }
        svg.push_str("</svg>");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_lines_are_drawn_to_scale_and_labels_escaped() {
        let chart = Chart {
            title: "<group1>".into(),
            bars: vec![
                Bar { label: "1".into(), value: 50, class: "in" },
                Bar { label: "2".into(), value: 100, class: "peak" },
            ],
            lines: vec![Line { value: 100, class: "licensed", label: "licensed".into() }],
            shaded: Some((1, 2)),
            label_every: 1,
        };
        let svg = chart.svg();
        assert!(svg.contains(r#"aria-label="&lt;group1&gt;""#), "{svg}");
        assert_eq!(svg.matches("<rect class=\"bar ").count(), 2);
        assert_eq!(svg.matches("<rect class=\"shade\"").count(), 1);
        // The 100 bar reaches the licensed line: both at the same height.
        let plot_h = HEIGHT - TOP - BOTTOM;
        let top = TOP + plot_h - 100.0 / 110.0 * plot_h;
        assert!(svg.contains(&format!(r#"y="{top:.2}""#)), "{svg}");
        assert!(svg.contains(&format!(r#"y1="{top:.1}""#)), "{svg}");
    }
}
