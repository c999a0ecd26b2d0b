//! cwbench coordinator: loads a scenario, drives agents over gRPC, merges
//! their measurements and writes the comparison report.

pub mod chart;
pub mod cli;
pub mod compare;
pub mod connection;
pub mod csv;
pub mod dashboard;
pub mod discovery;
pub mod driver;
pub mod feed;
pub mod groups;
pub mod hlog;
pub mod html;
pub mod interrupt;
pub mod joblog;
pub mod local;
pub mod observer;
pub mod output;
pub mod progress;
pub mod report;
pub mod result;
pub mod run;
pub mod scaling;
pub mod trace;
pub mod websocket;
