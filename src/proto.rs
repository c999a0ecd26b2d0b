//! Generated gRPC code for package `cwbench.v1` (see `proto/`).

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("cwbench.v1");
