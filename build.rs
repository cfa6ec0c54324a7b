//! Records what run.json reports about the build: the git revision of the source and the
//! versions of the numeric dependencies (from Cargo.lock).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let revision = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=RANKSEG_GIT_REVISION={revision}");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (name, var) in [
        ("candle-core", "CANDLE"),
        ("polars", "POLARS"),
        ("hf-hub", "HF_HUB"),
    ] {
        let marker = format!("name = \"{name}\"\nversion = \"");
        let version = lock
            .find(&marker)
            .and_then(|at| lock[at + marker.len()..].split('"').next())
            .unwrap_or("unknown");
        println!("cargo:rustc-env=RANKSEG_{var}_VERSION={version}");
    }
}
