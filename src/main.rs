//! The `cut` command line: parses arguments, calls the library, prints.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, outermost context first.
            let text = format!("{err:#}").replace('\n', " ");
            eprintln!("cut: error: {text}");
            ExitCode::from(1)
        }
    }
}
