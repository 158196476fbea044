//! Subcommands. Each parses its arguments, calls the library and prints; nothing else.

mod args;
mod bench;
mod budget;
mod data;
mod eval;
mod export;
mod import;
mod inspect;
mod int8;
mod new;
mod plan;
mod predict;
mod progress;
mod prune;
mod scenenet;
mod split;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cut",
    version,
    about = "Prune pre-trained multi-task models into compact task-specific models",
    long_about = "Prune pre-trained multi-task models into compact task-specific models.\n\nExit codes: 0 success, 1 error (bad input, failed run), 2 bad command line."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a checkpoint's tasks, and per group (backbone, each head) its size, sparsity and compute.
    Inspect(inspect::Args),
    /// Write a freshly initialised SceneNet checkpoint.
    New(new::Args),
    /// Score a model on a dataset split: per-task metrics, optional delta_m against a baseline.
    Eval(eval::Args),
    /// Train a new SceneNet, or fine-tune a checkpoint, selecting on the validation split.
    Train(train::Args),
    /// Prune a multi-task model to the selected tasks (the CUT method), with a size and accuracy report.
    Prune(prune::Args),
    /// Forward-pass latency of a model: median and spread, images per second, measured and planned memory.
    Bench(bench::Args),
    /// Write a model for a runtime: ONNX (any model), or a text encoder as a Hugging Face folder.
    Export(export::Args),
    /// Run a model on input arrays and write each task's outputs (.safetensors or .npz).
    Predict(predict::Args),
    /// Read an ONNX file (from PyTorch, timm, torchvision, ...) into a cut checkpoint.
    Import(import::Args),
    /// Plan cooperative fine-tuning: which device fine-tunes which block, and the uplink shares.
    Plan(plan::Args),
    /// Split a model between a device and the cloud, with what crosses compressed; a report per cut.
    Split(split::Args),
    /// Datasets: `cut data synth OUT` writes a synthetic one.
    #[command(subcommand)]
    Data(data::Command),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::New(a) => new::run(a),
        Command::Data(c) => data::run(c),
        Command::Eval(a) => eval::run(a),
        Command::Train(a) => train::run(a),
        Command::Prune(a) => prune::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Export(a) => export::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Import(a) => import::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Split(a) => split::run(a),
    }
}

/// The command as the user typed it, program name normalised, for provenance records.
pub fn command_line() -> String {
    std::iter::once("cut".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a command wrote: one "wrote ..." line on stdout, or with `--json` the same facts as one
/// JSON document (warnings and progress stay on stderr).
pub fn print_wrote(json: bool, facts: serde_json::Value, line: &str) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&facts)?);
    } else {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument of every subcommand, as "cut sub --flag", that has no help text.
    fn undocumented(cmd: &clap::Command, path: &str) -> Vec<String> {
        let mut out: Vec<String> = cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set() && a.get_help().is_none() && a.get_long_help().is_none())
            .map(|a| match a.get_long() {
                Some(long) => format!("{path} --{long}"),
                None => format!("{path} {}", a.get_id()),
            })
            .collect();
        for sub in cmd.get_subcommands() {
            out.extend(undocumented(sub, &format!("{path} {}", sub.get_name())));
        }
        out
    }

    #[test]
    fn every_option_has_help_text() {
        let missing = undocumented(&super::Cli::command(), "cut");
        assert!(missing.is_empty(), "options without help text: {missing:?}");
    }
}
