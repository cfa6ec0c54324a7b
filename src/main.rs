use std::process::ExitCode;

// The predictors allocate per-image buffers of megabytes; the system allocator returns them
// to the OS after each image, and the page faults and TLB shootdowns that follow cost more
// than the work itself on small maps.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    rankseg::cli::main()
}
