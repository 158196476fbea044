//! The `cut` command line: parses arguments, calls the library, prints.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`cut inspect m | head -1`) would panic;
    // ending quietly on it is what Unix tools do.
    // SAFETY: restoring a signal's default disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, outermost context first.
            let text = format!("{err:#}").replace('\n', " ");
            eprintln!("cut: error: {text}");
            ExitCode::from(if cut::error::is_usage(&err) { 2 } else { 1 })
        }
    }
}
