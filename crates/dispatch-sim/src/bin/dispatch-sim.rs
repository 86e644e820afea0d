//! `dispatch-sim`: runs a seeded day with call-in off and on and writes the Markdown report.

use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use dispatch_sim::{SimConfig, markdown, run, service_level_svg};

#[derive(Parser)]
#[command(about = "Simulates a day of the marketplace on the real engine (call-in off, then on)")]
struct Args {
    /// Seed of the day's workload and draws.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// The short day of the test suite instead of the reported day.
    #[arg(long)]
    short: bool,
    /// Where to write the report (stdout when absent).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let config = if args.short { SimConfig::short_day(args.seed) } else { SimConfig::day(args.seed) };
    let started = Instant::now();
    let off = run(SimConfig { call_in: false, ..config.clone() }).await?;
    eprintln!("call-in off: done after {:.0} s", started.elapsed().as_secs_f64());
    let on = run(SimConfig { call_in: true, ..config.clone() }).await?;
    let command = format!(
        "cargo run --release -p dispatch-sim -- --seed {}{}{}",
        args.seed,
        if args.short { " --short" } else { "" },
        args.out.as_ref().map_or_else(String::new, |p| format!(" --out {}", p.display()))
    );
    let mut text = markdown(&config, &off, &on, &command, started.elapsed().as_secs_f64());
    match args.out {
        Some(p) => {
            // The plot goes beside the report, under benches/plots like the benchmarks'.
            let dir = p.parent().map(std::path::Path::to_path_buf).unwrap_or_default().join("benches/plots");
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("sim_service_level.svg"), service_level_svg(&config, &off, &on))?;
            text.push_str("\n![service level by hour](benches/plots/sim_service_level.svg)\n");
            std::fs::write(p, text)?;
        }
        None => print!("{text}"),
    }
    Ok(())
}
