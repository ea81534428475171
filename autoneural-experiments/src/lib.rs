//! Experiments: the file a researcher writes (`experiment`: data, model, stages, evaluation,
//! measurements; `extends`, `--set`), the run pipeline it drives (`runner`: data, tokenizer,
//! the training stages, evaluation, the run report), and sweeps over it (`sweep`: expansion
//! into runs, their execution with skip and resume, per-run measurements and the experiment
//! report), and the launchers that run a sweep's runs (`launch`: here, or on Slurm).

pub mod benchmarks;
pub mod experiment;
pub mod launch;
pub mod report;
pub mod runner;
pub mod sweep;
