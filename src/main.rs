use std::process::ExitCode;

// The predictors allocate per-image buffers of megabytes; the system allocator returns them
// to the OS after each image, and the page faults and TLB shootdowns that follow cost more
// than the work itself on small maps.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (mimalloc.h v2; the Rust bindings do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Keep freed memory instead of returning it to the OS after 10 ms: model forwards free
    // and reallocate activations of tens of megabytes, and zeroing fresh pages for them
    // cost a quarter of the forward time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // candle attaches a backtrace to its errors whenever RUST_BACKTRACE is set, and they
    // end up inside our one-line messages; RUST_LIB_BACKTRACE=0 turns that capture off
    // (panics still honour RUST_BACKTRACE). Set before any thread starts.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    rankseg::cli::main()
}
