//! Records what run.json reports about the build: the git revision of the source and the
//! versions of the numeric dependencies (from Cargo.lock). With the `cuda` feature, also
//! compiles `kernels/*.cu` to PTX for `src/gpu/` (nvcc from CUDA_HOME or PATH, for the
//! compute capability CUDA_COMPUTE_CAP, default 90).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        compile_kernels();
    }
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

fn compile_kernels() {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let nvcc = std::env::var_os("CUDA_HOME")
        .map(|home| Path::new(&home).join("bin/nvcc"))
        .filter(|nvcc| nvcc.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("kernels")
        .expect("kernels/ holds the CUDA sources")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    kernels.sort();
    for kernel in kernels {
        let ptx = out.join(kernel.with_extension("ptx").file_name().expect("a file name"));
        let status = Command::new(&nvcc)
            .args(["-ptx", "-O3", "--std=c++17", &format!("-arch=sm_{cap}"), "-o"])
            .arg(&ptx)
            .arg(&kernel)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "the cuda feature needs nvcc ({}: {e}); on a machine without CUDA run `eval \"$(scripts/cuda_toolkit.sh)\"` first",
                    nvcc.display()
                )
            });
        assert!(status.success(), "nvcc failed on {}", kernel.display());
    }
}
