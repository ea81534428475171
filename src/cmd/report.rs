//! `autoneural report runs/<experiment>`: the experiment report rebuilt from its run
//! directories (results.csv, results.jsonl, report.md, plots/).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// An experiment directory: `runs/<experiment>`, holding `<run>/result.json` per run.
    pub dir: PathBuf,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let path = autoneural_experiments::sweep::report::write(&args.dir)?;
    println!("report: {}", path.display());
    println!("tables: {}, {}", args.dir.join("results.csv").display(), args.dir.join("results.jsonl").display());
    Ok(())
}
