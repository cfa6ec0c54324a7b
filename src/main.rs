use std::process::ExitCode;

fn main() -> ExitCode {
    rankseg::cli::main()
}
