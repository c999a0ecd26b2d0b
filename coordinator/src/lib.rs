//! cwbench coordinator: loads a scenario, drives agents over gRPC, merges
//! their measurements and writes the comparison report.

pub mod cli;
pub mod discovery;
pub mod driver;
pub mod output;
pub mod report;
pub mod result;
pub mod run;
pub mod trace;
