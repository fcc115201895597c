//! PNG charts of the curves and the backlog RSS samples, drawn from the JSON files the
//! `curves` and `backlog` commands write (`--json`), so charts are redrawn without rerunning
//! the brokers.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::backlog::{self, RoleRun};
use crate::curves::{BrokerKind, Mode, Point};
use crate::rabbit::BoxError;

/// Options of the chart drawing.
#[derive(clap::Args)]
pub struct Args {
    /// The folder holding the JSON results; charts are written next to them.
    #[arg(long, default_value = "docs/bench")]
    dir: PathBuf,
    /// A TrueType font for the labels.
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    font: PathBuf,
}

/// Draw every chart whose data is present.
pub fn run(args: Args) -> Result<(), BoxError> {
    let font = std::fs::read(&args.font).map_err(|e| {
        format!(
            "reading the font {} ({e}); Debian: apt-get install fonts-dejavu-core, or pass --font",
            args.font.display()
        )
    })?;
    // plotters keeps registered fonts for the process's lifetime.
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| "the font did not load")?;
    let mut drawn = 0;
    for broker in ["rabbit", "artemis"] {
        let data = args.dir.join(format!("curves-{broker}.json"));
        if data.exists() {
            let points: Vec<Point> = serde_json::from_str(&std::fs::read_to_string(&data)?)?;
            let out = args.dir.join(format!("curves-{broker}.png"));
            curves_chart(&points, &out)?;
            println!("wrote {}", out.display());
            drawn += 1;
        }
        let data = args.dir.join(format!("backlog-{broker}.json"));
        if data.exists() {
            let results: backlog::Results = serde_json::from_str(&std::fs::read_to_string(&data)?)?;
            let out = args.dir.join(format!("backlog-{broker}.png"));
            backlog_chart(&results, &out)?;
            println!("wrote {}", out.display());
            drawn += 1;
        }
    }
    if drawn == 0 {
        return Err(format!(
            "no curves-*.json or backlog-*.json in {}",
            args.dir.display()
        )
        .into());
    }
    Ok(())
}

fn broker_name(b: BrokerKind) -> &'static str {
    match b {
        BrokerKind::Rabbit => "RabbitMQ",
        BrokerKind::Artemis => "Artemis",
    }
}

/// Two panels: coolmq/raw over body size, and over concurrent clients.
fn curves_chart(points: &[Point], out: &Path) -> Result<(), BoxError> {
    let Some(first) = points.first() else {
        return Err("no points".into());
    };
    let root = BitMapBackend::new(out, (1400, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(700);
    let max = points.iter().map(|p| p.hi).fold(1.2, f64::max).min(3.0) + 0.1;
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
    ];

    // Sizes, log2 axis.
    let mut chart = ChartBuilder::on(&left)
        .caption(
            format!(
                "{}: coolmq / raw over body size (1 client)",
                broker_name(first.broker)
            ),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(3.5f64..21.5f64, 0f64..max)?;
    chart
        .configure_mesh()
        .x_desc("body size")
        .y_desc("coolmq / raw (median of reps)")
        .x_labels(18)
        .x_label_formatter(&|x| {
            let b = 2f64.powf(*x).round() as u64;
            match b {
                16 | 1024 | 65536 | 1048576 => human(b),
                _ => String::new(),
            }
        })
        .label_style(("sans-serif", 15))
        .draw()?;
    target_line(&mut chart, 3.5, 21.5)?;
    for (i, scenario) in ["publish", "consume"].iter().enumerate() {
        let series: Vec<(f64, f64, f64, f64)> = points
            .iter()
            .filter(|p| p.curve == "sizes" && p.scenario == *scenario)
            .map(|p| ((p.size as f64).log2(), p.ratio, p.lo, p.hi))
            .collect();
        draw_series(&mut chart, &series, colors[i], scenario_label(scenario))?;
    }
    legend(&mut chart)?;

    // Clients, log2 axis.
    let mut chart = ChartBuilder::on(&right)
        .caption(
            format!(
                "{}: coolmq / raw over concurrent clients (1 KiB)",
                broker_name(first.broker)
            ),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.3f64..6.3f64, 0f64..max)?;
    chart
        .configure_mesh()
        .x_desc("publishers (publish) / consumers (consume-ack)")
        .y_desc("coolmq / raw (median of reps)")
        .x_labels(7)
        .x_label_formatter(&|x| {
            let c = 2f64.powf(*x).round() as u64;
            match c {
                1 | 4 | 16 | 64 => c.to_string(),
                _ => String::new(),
            }
        })
        .label_style(("sans-serif", 15))
        .draw()?;
    target_line(&mut chart, -0.3, 6.3)?;
    let mut k = 0;
    for scenario in ["publish", "consume"] {
        for (mode, name) in [
            (Mode::SharedConnection, "one connection"),
            (Mode::ConnectionEach, "a connection each"),
        ] {
            let series: Vec<(f64, f64, f64, f64)> = points
                .iter()
                .filter(|p| {
                    p.curve == "publishers"
                        && p.scenario == scenario
                        && (p.mode == mode || p.clients == 1)
                })
                .map(|p| ((p.clients as f64).log2(), p.ratio, p.lo, p.hi))
                .collect();
            let label = format!("{}, {name}", scenario_label(scenario));
            draw_series(&mut chart, &series, colors[k], &label)?;
            k += 1;
        }
    }
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

fn scenario_label(s: &str) -> &'static str {
    if s == "publish" {
        "publish-pipelined"
    } else {
        "consume-ack"
    }
}

type Chart<'a> = ChartContext<
    'a,
    BitMapBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn target_line(chart: &mut Chart<'_>, from: f64, to: f64) -> Result<(), BoxError> {
    chart
        .draw_series(LineSeries::new(
            vec![(from, 0.95), (to, 0.95)],
            BLACK.mix(0.4).stroke_width(1),
        ))?
        .label("target 0.95")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    Ok(())
}

/// A line through the medians with the per-repetition range as a vertical bar.
fn draw_series(
    chart: &mut Chart<'_>,
    series: &[(f64, f64, f64, f64)],
    color: RGBColor,
    label: &str,
) -> Result<(), BoxError> {
    let mut sorted = series.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    chart
        .draw_series(LineSeries::new(
            sorted.iter().map(|p| (p.0, p.1)),
            color.stroke_width(2),
        ))?
        .label(label.to_string())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    chart.draw_series(
        sorted
            .iter()
            .map(|p| Circle::new((p.0, p.1), 4, color.filled())),
    )?;
    chart.draw_series(
        sorted.iter().map(|p| {
            PathElement::new(vec![(p.0, p.2), (p.0, p.3)], color.mix(0.6).stroke_width(1))
        }),
    )?;
    Ok(())
}

fn legend(chart: &mut Chart<'_>) -> Result<(), BoxError> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// RSS over messages done, for the full runs, with each baseline's peak and the flat limit.
fn backlog_chart(results: &backlog::Results, out: &Path) -> Result<(), BoxError> {
    let root = BitMapBackend::new(out, (1400, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(700);
    for (area, role) in [(left, "publish"), (right, "consume")] {
        let runs: Vec<&RoleRun> = results.runs.iter().filter(|r| r.role == role).collect();
        let (Some(base), Some(full)) = (
            runs.iter().min_by_key(|r| r.messages),
            runs.iter().max_by_key(|r| r.messages),
        ) else {
            continue;
        };
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let base_peak = mib(base.samples.iter().map(|s| s.rss).max().unwrap_or(0));
        let full_peak = mib(full.samples.iter().map(|s| s.rss).max().unwrap_or(0));
        let top = (base_peak * backlog::FLAT).max(full_peak) * 1.3;
        let total = full.messages as f64 / 1000.0;
        let mut chart = ChartBuilder::on(&area)
            .caption(
                format!(
                    "{}: {} process RSS, {}k-message backlog",
                    broker_name(results.broker),
                    if role == "publish" {
                        "publisher (window 256)"
                    } else {
                        "consumer (prefetch 200)"
                    },
                    full.messages / 1000
                ),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..total, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("thousands of messages done")
            .y_desc("resident set (MiB)")
            .label_style(("sans-serif", 15))
            .draw()?;
        let blue = RGBColor(31, 119, 180);
        chart
            .draw_series(LineSeries::new(
                full.samples
                    .iter()
                    .map(|s| (s.done as f64 / 1000.0, mib(s.rss))),
                blue.stroke_width(2),
            ))?
            .label(format!(
                "{}k backlog (peak {full_peak:.1} MiB)",
                full.messages / 1000
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2))
            });
        let green = RGBColor(44, 160, 44);
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, base_peak), (total, base_peak)],
                green.stroke_width(1),
            ))?
            .label(format!(
                "{}k backlog's peak ({base_peak:.1} MiB)",
                base.messages / 1000
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], green));
        let red = RGBColor(214, 39, 40);
        let limit = base_peak * backlog::FLAT;
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, limit), (total, limit)],
                red.stroke_width(1),
            ))?
            .label(format!("flat limit {}× ({limit:.1} MiB)", backlog::FLAT))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red));
        legend(&mut chart)?;
    }
    root.present()?;
    Ok(())
}
