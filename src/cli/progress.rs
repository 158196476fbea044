//! Progress bars: drawn on a terminal, hidden in pipes and when `CI` is set.

/// Runs `work` with a progress callback `(phase, done, total)` that draws one bar per phase (on a
/// terminal only), cleared when the work ends.
pub fn with_phase_bars<T>(work: impl FnOnce(&mut dyn FnMut(&str, usize, usize)) -> T) -> T {
    let mut bars: std::collections::BTreeMap<String, indicatif::ProgressBar> = Default::default();
    let out = work(&mut |phase, done, total| {
        bars.entry(phase.to_string())
            .or_insert_with(|| progress(total as u64, phase))
            .set_position(done as u64)
    });
    for bar in bars.values() {
        bar.finish_and_clear();
    }
    out
}

/// A progress bar on stderr when it is a terminal; hidden in pipes and CI.
pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let target = if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    };
    let bar = indicatif::ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}
