//! Where a sweep's runs execute: `local` (child processes of this one, `sweep::run_sweep`)
//! or `slurm` (a job array on a cluster, [`slurm`]). Every launcher runs the same command
//! per run, `autoneural run FILE --only ID`, so a run's directory, its resumption and its
//! result are the same whichever started it. One run can also span machines (`nodes`):
//! rank 0 trains on its devices and on those the other ranks serve.

pub mod nodes;
pub mod slurm;

/// `--launcher`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Launcher {
    #[default]
    Local,
    Slurm,
}

impl std::str::FromStr for Launcher {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(Self::Local),
            "slurm" => Ok(Self::Slurm),
            other => Err(format!("unknown launcher {other:?}: expected local or slurm")),
        }
    }
}
