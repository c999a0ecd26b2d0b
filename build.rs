//! Compiles the wire contract in `proto/` with protox (pure Rust), so no system
//! `protoc` is needed anywhere.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/cwbench/v1/agent.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
