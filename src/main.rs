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
    // A panic (a bug, or a libtorch error through one of tch's panicking methods) is one line
    // too, never a backtrace or a C++ frame dump; the run then exits 1 like any other failure.
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        eprintln!(
            "cut: error: {} (an internal error; please report it)",
            first_line(payload)
        );
    }));
    let args = cli::Cli::parse();
    match std::panic::catch_unwind(|| cli::run(args)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            // One line, outermost context first; of each cause only its first line.
            let text: Vec<String> = err.chain().map(|e| first_line(&e.to_string())).collect();
            eprintln!("cut: error: {}", text.join(": "));
            ExitCode::from(if cut::error::is_usage(&err) { 2 } else { 1 })
        }
        Err(_) => ExitCode::from(1),
    }
}

/// The first line of a message, without what tch wraps libtorch's errors in (`Torch("...")`,
/// after an `unwrap` in its panicking methods; the lines after the first are C++ frames).
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    let line = line
        .strip_prefix("called `Result::unwrap()` on an `Err` value: ")
        .unwrap_or(line);
    match line.strip_prefix("Torch(\"") {
        Some(inner) => inner.trim_end_matches("\")").to_string(),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::first_line;

    #[test]
    fn messages_keep_their_first_line_without_tch_wrapping() {
        let torch = "called `Result::unwrap()` on an `Err` value: Torch(\"Given groups=1, weight of size [8, 3, 7, 7], expected input[1, 4, 64, 64] to have 3 channels, but got 4 channels instead\nException raised from check_shape_forward at conv.cpp:123 (most recent call first):\nframe #0: c10::Error::Error()\")";
        assert_eq!(
            first_line(torch),
            "Given groups=1, weight of size [8, 3, 7, 7], expected input[1, 4, 64, 64] to have 3 channels, but got 4 channels instead"
        );
        assert_eq!(
            first_line("--size 1x1 is too small (at least 8x8)"),
            "--size 1x1 is too small (at least 8x8)"
        );
        assert_eq!(first_line("two\nlines"), "two");
    }
}
