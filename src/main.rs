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
    // On SIGINT or SIGTERM, remove the temporaries of outputs not yet in place, then stop. A
    // commit under way finishes first, so the outputs of a run appear all or none.
    let _ = ctrlc::set_handler(|| {
        cut::fsio::remove_temporaries();
        eprintln!("cut: interrupted; outputs not yet complete were removed");
        // Not exit(): its teardown of libraries runs beside libtorch's live threads and can crash.
        // SAFETY: ends the process at once; the temporaries are gone and stderr is unbuffered.
        unsafe { libc::_exit(130) }
    });
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
