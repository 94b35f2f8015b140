//! A small SVG plot of a run's timeline: requests answered 200 per second and their p99, or
//! events delivered per second and consumer lag. No dependency: the SVG is written by hand.

use std::fmt::Write;

/// One line of the plot: a name, a colour, and (x, y) points; each line has its own y scale,
/// shown on the left (first line) or the right (second line).
pub struct Series<'a> {
    pub name: &'a str,
    pub colour: &'a str,
    pub points: Vec<(f64, f64)>,
}

pub fn svg(title: &str, x_label: &str, series: &[Series<'_>]) -> String {
    let (w, h, left, right, top, bottom) = (800.0, 360.0, 70.0, 70.0, 40.0, 50.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let x_max = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(1.0_f64, f64::max);
    let mut out = String::new();
    let _ = write!(out, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#);
    let _ = write!(
        out,
        r#"<rect width="{w}" height="{h}" fill="white"/><text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        w / 2.0,
        escape(title)
    );
    let _ = write!(out, r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#, top + plot_h, left + plot_w, top + plot_h);
    let _ = write!(out, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, left + plot_w / 2.0, h - 12.0, escape(x_label));
    for i in 0..=5 {
        let x = left + plot_w * f64::from(i) / 5.0;
        let _ = write!(out, r#"<text x="{x}" y="{}" text-anchor="middle">{:.0}</text>"#, top + plot_h + 16.0, x_max * f64::from(i) / 5.0);
    }
    for (idx, s) in series.iter().enumerate() {
        let y_max = s.points.iter().map(|p| p.1).fold(0.0_f64, f64::max).max(1e-9) * 1.1;
        let path: Vec<String> =
            s.points.iter().map(|(x, y)| format!("{:.1},{:.1}", left + plot_w * x / x_max, top + plot_h - plot_h * y / y_max)).collect();
        let _ = write!(out, r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#, s.colour, path.join(" "));
        let axis_x = if idx == 0 { left - 8.0 } else { left + plot_w + 8.0 };
        let anchor = if idx == 0 { "end" } else { "start" };
        for i in 0..=4 {
            let y = top + plot_h - plot_h * f64::from(i) / 4.0;
            let _ = write!(
                out,
                r#"<text x="{axis_x}" y="{}" text-anchor="{anchor}" fill="{}">{}</text>"#,
                y + 4.0,
                s.colour,
                short(y_max * f64::from(i) / 4.0)
            );
        }
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" fill="{}">{}</text>"#,
            left + 10.0 + 220.0 * idx as f64,
            top - 8.0,
            s.colour,
            escape(s.name)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_well_formed_svg_with_every_series() {
        let s = svg(
            "t <1>",
            "s",
            &[
                Series { name: "a", colour: "blue", points: vec![(0.0, 1.0), (1.0, 3.0)] },
                Series { name: "b", colour: "red", points: vec![(0.0, 5.0)] },
            ],
        );
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("t &lt;1&gt;"));
    }
}
