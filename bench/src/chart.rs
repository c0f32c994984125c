//! The chart beside the report: a hand-written SVG (no plotting dependency) with, per case,
//! one bar per client for client CPU per operation (log scale) and for peak RSS.

use std::fmt::Write as _;

use crate::client::Scenario;
use crate::driver::{Case, ClientKind};
use crate::report::{Report, num, thousands};

const LABEL_W: f64 = 170.0;
const PANEL_W: f64 = 360.0;
const GAP: f64 = 40.0;
const BAR_H: f64 = 11.0;
const BAR_GAP: f64 = 2.0;
const GROUP_GAP: f64 = 12.0;
const TOP: f64 = 78.0;

fn color(client: ClientKind) -> &'static str {
    match client {
        ClientKind::Rust => "#d9480f",
        ClientKind::RustMt => "#ffa94d",
        ClientKind::Bare => "#868e96",
        ClientKind::Python => "#1c7ed6",
        ClientKind::Node => "#2f9e44",
    }
}

fn short(case: &Case) -> String {
    let label = match case.scenario {
        Scenario::GetDevice if case.concurrency > 1 => {
            format!("get_device, {} in flight", case.concurrency)
        }
        Scenario::GetDevice => "get_device, sequential".into(),
        Scenario::TwinPatch => "twin PATCH".into(),
        Scenario::Query => format!("query {}", thousands(case.size)),
        Scenario::BulkCreate => "bulk create".into(),
        Scenario::C2d if case.concurrency > 1 => {
            format!("C2D send, {} in flight", case.concurrency)
        }
        Scenario::C2d => "C2D send, sequential".into(),
    };
    if case.rust_only {
        format!("{label} (full, Rust)")
    } else {
        label
    }
}

/// An axis label: whole numbers as such, fractions as they are.
fn tick(v: f64) -> String {
    if v >= 1.0 {
        thousands(v.round() as u64)
    } else {
        format!("{v}")
    }
}

/// A case's label and its bars: (client, CPU µs per operation, peak RSS MiB).
type Group = (String, Vec<(ClientKind, f64, f64)>);

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The chart for `report`, as an SVG document.
pub(crate) fn svg(report: &Report) -> String {
    let groups: Vec<Group> = report
        .cases
        .iter()
        .map(|case| {
            let bars = case
                .clients
                .iter()
                .filter_map(|&c| {
                    let s = report.summary_of(&case.key, c)?;
                    Some((c, s.cpu_us_per_op.median, s.rss_mib.median))
                })
                .collect();
            (short(case), bars)
        })
        .filter(|(_, bars): &Group| !bars.is_empty())
        .collect();
    let rows: usize = groups.iter().map(|(_, b)| b.len()).sum();
    let height = TOP + rows as f64 * (BAR_H + BAR_GAP) + groups.len() as f64 * GROUP_GAP + 40.0;
    let width = LABEL_W + 2.0 * PANEL_W + GAP + 70.0;

    let cpu_values = groups.iter().flat_map(|(_, b)| b.iter().map(|x| x.1));
    let (lo, hi) = cpu_values.fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| {
        (lo.min(v.max(1e-3)), hi.max(v))
    });
    let lo_exp = if lo.is_finite() {
        lo.log10().floor()
    } else {
        0.0
    };
    let hi_exp = (hi.max(1e-3).log10().ceil()).max(lo_exp + 1.0);
    let cpu_x = |v: f64| {
        let t = (v.max(10f64.powf(lo_exp)).log10() - lo_exp) / (hi_exp - lo_exp);
        LABEL_W + t * PANEL_W
    };
    let rss_max = groups
        .iter()
        .flat_map(|(_, b)| b.iter().map(|x| x.2))
        .fold(1.0_f64, f64::max);
    let rss_step = nice_step(rss_max / 4.0);
    let rss_top = (rss_max / rss_step).ceil() * rss_step;
    let rss_left = LABEL_W + PANEL_W + GAP;
    let rss_x = |v: f64| rss_left + v / rss_top * PANEL_W;
    let bottom = height - 30.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="Helvetica, Arial, sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">iothub-rs vs bare reqwest vs official SDKs, on the emulator (medians)</text>"#
    );
    // Legend.
    let mut x = 10.0;
    for client in [
        ClientKind::Rust,
        ClientKind::RustMt,
        ClientKind::Bare,
        ClientKind::Python,
        ClientKind::Node,
    ] {
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="32" width="10" height="10" fill="{}"/><text x="{}" y="41">{}</text>"#,
            color(client),
            x + 14.0,
            escape(client.label())
        );
        x += 14.0 + client.label().len() as f64 * 6.2 + 18.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="{LABEL_W}" y="66" font-weight="bold">Client CPU per operation, µs (log scale)</text>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{rss_left}" y="66" font-weight="bold">Client peak RSS, MiB</text>"#
    );
    // Grid lines and ticks.
    let mut e = lo_exp;
    while e <= hi_exp {
        let gx = cpu_x(10f64.powf(e));
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{bottom}" stroke="#dee2e6"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle" fill="#495057">{}</text>"##,
            bottom + 14.0,
            tick(10f64.powf(e))
        );
        e += 1.0;
    }
    let mut v = 0.0;
    while v <= rss_top + 1e-9 {
        let gx = rss_x(v);
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{bottom}" stroke="#dee2e6"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle" fill="#495057">{}</text>"##,
            bottom + 14.0,
            tick(v)
        );
        v += rss_step;
    }
    let mut y = TOP + 4.0;
    for (label, bars) in &groups {
        let group_h = bars.len() as f64 * (BAR_H + BAR_GAP);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LABEL_W - 8.0,
            y + group_h / 2.0 + 3.0,
            escape(label)
        );
        for (client, cpu, rss) in bars {
            let fill = color(*client);
            let w = cpu_x(*cpu) - LABEL_W;
            let _ = writeln!(
                s,
                r#"<rect x="{LABEL_W}" y="{y:.1}" width="{w:.1}" height="{BAR_H}" fill="{fill}"><title>{}: {} µs</title></rect><text x="{:.1}" y="{:.1}" font-size="9">{}</text>"#,
                escape(client.label()),
                num(*cpu),
                LABEL_W + w + 3.0,
                y + BAR_H - 2.0,
                num(*cpu)
            );
            let w = rss_x(*rss) - rss_left;
            let _ = writeln!(
                s,
                r#"<rect x="{rss_left}" y="{y:.1}" width="{w:.1}" height="{BAR_H}" fill="{fill}"><title>{}: {} MiB</title></rect><text x="{:.1}" y="{:.1}" font-size="9">{}</text>"#,
                escape(client.label()),
                num(*rss),
                rss_left + w + 3.0,
                y + BAR_H - 2.0,
                num(*rss)
            );
            y += BAR_H + BAR_GAP;
        }
        y += GROUP_GAP;
    }
    s.push_str("</svg>\n");
    s
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let raw = raw.max(1e-9);
    let pow = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * pow)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * pow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(12.0), 20.0);
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(100.0), 100.0);
    }
}
