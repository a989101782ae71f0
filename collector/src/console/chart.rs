//! Charts as SVG drawn on the server: bars, horizontal lines, a shaded span, missing bars
//! hatched. No script: every chart's numbers are also a table beside it.

use std::fmt::Write as _;

use tally_common::bandwidth::Bandwidth;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 78.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 8.0;

/// One bar: its label on the x axis (shown every `label_every` bars) and its CSS class; a bar
/// of class `missing` has no value and is drawn hatched, the plot's full height.
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

/// A round step between ticks for about four ticks up to `top`: 1, 2, 2.5 or 5 times a power
/// of ten bits per second, at least 1 Mbps.
fn tick_step(top: u64) -> u64 {
    let rough = (top / 4).max(1_000_000);
    let mut power = 1u64;
    while power <= rough / 10 {
        power *= 10;
    }
    [1, 2, 5, 10].into_iter().map(|m| m * power).chain([power * 5 / 2]).filter(|s| *s >= rough).min().unwrap_or(rough)
}

/// A tick's label: whole Mbps (`150 Mbps`), or a tenth below 10 Mbps steps.
fn tick_label(value: u64) -> String {
    if value.is_multiple_of(1_000_000) { format!("{} Mbps", value / 1_000_000) } else { Bandwidth(value).to_string() }
}

impl Chart {
    /// The chart as an `<svg>` element, bit rates on a linear axis from 0 to the first round
    /// tick at least 5 % above the highest bar or line.
    pub fn svg(&self) -> String {
        let top_value = self.bars.iter().map(|b| b.value).chain(self.lines.iter().map(|l| l.value)).max().unwrap_or(0);
        let step = tick_step(top_value);
        let ticks = (top_value + top_value / 20).div_ceil(step).max(1);
        let scale = (step * ticks) as f64;
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
        if self.bars.iter().any(|b| b.class == "missing") {
            svg.push_str(
                r#"<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><line class="hatch" x1="0" y1="0" x2="0" y2="6"/></pattern></defs>"#,
            );
        }
        for tick in 0..=ticks {
            let value = step * tick;
            let _ = write!(
                svg,
                r#"<line class="grid" x1="{LEFT}" x2="{WIDTH}" y1="{0:.1}" y2="{0:.1}"/><text x="{1}" y="{2:.1}" text-anchor="end">{3}</text>"#,
                y(value),
                LEFT - 4.0,
                y(value) + 4.0,
                tick_label(value)
            );
        }
        for (i, bar) in self.bars.iter().enumerate() {
            let x = LEFT + i as f64 * slot;
            let (top, said) = match bar.class {
                "missing" => (TOP, "missing".to_owned()),
                _ => (y(bar.value), Bandwidth(bar.value).to_string()),
            };
            let _ = write!(
                svg,
                r#"<rect class="bar {}" x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}"><title>{}: {}</title></rect>"#,
                bar.class,
                x + slot * 0.1,
                top,
                (slot * 0.8).max(0.5),
                TOP + plot_h - top,
                escape(&bar.label),
                said
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
        // The 100 bar reaches the licensed line: both at the same height, half of the 1 Mbps axis.
        let plot_h = HEIGHT - TOP - BOTTOM;
        let top = TOP + plot_h - 100.0 / 1_000_000.0 * plot_h;
        assert!(svg.contains(&format!(r#"y="{top:.2}""#)), "{svg}");
        assert!(svg.contains(&format!(r#"y1="{top:.1}""#)), "{svg}");
    }

    #[test]
    fn ticks_are_round_and_leave_headroom() {
        assert_eq!(tick_step(0), 1_000_000);
        assert_eq!(tick_step(152_300_000), 50_000_000);
        assert_eq!(tick_step(38_000_000), 10_000_000);
        assert_eq!(tick_step(9_000_000), 2_500_000);
        assert_eq!(tick_step(1_700_000_000), 500_000_000);
        let bars = vec![Bar { label: "1".into(), value: 152_300_000, class: "in" }];
        let svg = Chart { title: String::new(), bars, lines: Vec::new(), shaded: None, label_every: 1 }.svg();
        let labels: Vec<&str> =
            svg.split("text-anchor=\"end\">").skip(1).map(|t| t.split('<').next().unwrap()).collect();
        assert_eq!(labels, ["0 Mbps", "50 Mbps", "100 Mbps", "150 Mbps", "200 Mbps"]);
        assert_eq!(tick_label(2_500_000), "2.5 Mbps");
    }

    #[test]
    fn a_missing_bar_is_hatched_to_the_top() {
        let bars = vec![Bar { label: "00:00".into(), value: 0, class: "missing" }];
        let svg = Chart { title: String::new(), bars, lines: Vec::new(), shaded: None, label_every: 1 }.svg();
        assert!(svg.contains(r#"<pattern id="hatch""#), "{svg}");
        assert!(
            svg.contains(&format!(r#"class="bar missing" x="{:.2}" y="{TOP:.2}""#, LEFT + (WIDTH - LEFT) * 0.1)),
            "{svg}"
        );
        assert!(svg.contains("<title>00:00: missing</title>"), "{svg}");
    }
}
