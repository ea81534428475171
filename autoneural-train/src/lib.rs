//! Training: experiment files (`config`) and the staged training loop with exact
//! resumption (`train`), over the data of `autoneural-data`.

pub mod config;
pub mod train;
