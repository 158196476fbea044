//! Arguments shared by several subcommands.

use anyhow::Result;
use cut::checkpoint::LoadOptions;
use std::path::PathBuf;

/// How to read a model checkpoint.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// The model checkpoint (.safetensors), or a Hugging Face model folder (text encoders).
    pub model: PathBuf,
    /// Task names for a checkpoint without a cut graph (a converted reference state dict), in head order.
    #[arg(long, value_name = "a,b,c")]
    pub task_names: Option<String>,
    /// Task kinds for such a checkpoint: in head order (segmentation, normal, depth,
    /// classification, regression), or by name for a text encoder's heads
    /// (genre:sequence-mean,pos:token; kinds token, sequence, sequence-mean).
    #[arg(long, value_name = "k1,k2 | a:k1,b:k2")]
    pub task_kinds: Option<String>,
    /// An ONNX file's per-sample input size, where the file leaves it symbolic (or to override
    /// it): NAME:CxHxW, NAME:L for text, or CxHxW (HxW) for its only input; repeat for several.
    /// bench, inspect and export also run at an unnamed size.
    #[arg(long = "input", value_name = "[NAME:]SIZE")]
    pub input_sizes: Vec<String>,
}

impl ModelArgs {
    /// How to read the model; an unnamed `--input` is an ONNX file's import size.
    pub fn load_options(&self) -> Result<LoadOptions> {
        let mut opts = LoadOptions::from_flags(self.task_names.as_deref(), self.task_kinds.as_deref())?;
        opts.input_sizes = LoadOptions::parse_input_sizes(&self.input_sizes)?;
        Ok(opts)
    }

    /// For commands that also run at a size (bench, inspect, export): how to read the model, and
    /// the unnamed `--input`, which sizes a checkpoint's run and also an ONNX file's import.
    pub fn load_options_and_run_size(&self) -> Result<(LoadOptions, Option<String>)> {
        let mut opts = self.load_options()?;
        let unnamed = self.input_sizes.iter().find(|i| !i.contains(':')).cloned();
        if !cut::checkpoint::is_onnx(&self.model) {
            opts.input_sizes.remove("");
        }
        Ok((opts, unnamed))
    }
}

/// How image files become a model's image input, as the user states it.
#[derive(clap::Args, Clone, Debug)]
pub struct NormArgs {
    /// Images (files, a dataset's): per-channel mean subtracted after pixels are scaled to [0,
    /// --pixel-range], "R,G,B" ("B,G,R" with --bgr); torchvision's ImageNet models take
    /// 0.485,0.456,0.406. Recorded in the model written; default: what the model records, else 0,0,0.
    #[arg(long, value_name = "R,G,B")]
    pub mean: Option<String>,
    /// Images: per-channel standard deviation divided out after the mean; torchvision's
    /// ImageNet models take 0.229,0.224,0.225 (default: the model's, else 1,1,1).
    #[arg(long, value_name = "R,G,B")]
    pub std: Option<String>,
    /// Images: the model reads blue, green, red (OpenCV's order), not red, green, blue.
    #[arg(long)]
    pub bgr: bool,
    /// Images: what a pixel of 255 becomes before the mean: 1 (torchvision, timm, Ultralytics)
    /// or 255 (Caffe and OpenCV models, which subtract a mean from pixels as stored).
    #[arg(long, value_name = "1|255")]
    pub pixel_range: Option<f64>,
}

impl NormArgs {
    /// `opts` with the stated normalisation, which the model as loaded records.
    pub fn apply(&self, opts: LoadOptions) -> Result<LoadOptions> {
        Ok(LoadOptions {
            normalisation: self.normalisation()?,
            ..opts
        })
    }

    /// The stated normalisation, or `None` when no flag was given.
    pub fn normalisation(&self) -> Result<Option<cut::graph::Normalisation>> {
        cut::graph::Normalisation::from_flags(self.mean.as_deref(), self.std.as_deref(), self.bgr, self.pixel_range)
    }
}

pub use cut::families::parse_image_size as parse_input_size;

/// Where data comes from, shared by eval, train and prune.
#[derive(clap::Args, Clone, Debug)]
pub struct DataArgs {
    /// Dataset: the NYUv2 3-task layout for image models, train.jsonl and test.jsonl for text
    /// models; or, without labels (tasks are then distilled from the model), a folder of images,
    /// of .npy/.npz files, one .npz with a row per example, or one .jsonl of texts.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Index file inside the dataset folder.
    #[arg(long, default_value = cut::data::layout::INDEX_FILE)]
    pub index: String,
    /// Share of the training list held out (deterministically) as the validation split.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Images (or texts) per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Text data: the most tokens per line, special tokens included; longer lines are truncated
    /// (and counted). Default 128, or the model's position table if it holds fewer.
    #[arg(long)]
    pub max_len: Option<usize>,
    /// A folder of images without labels: resize them to HxW (default: the model's input size).
    #[arg(long, value_name = "HxW", value_parser = cut::data::unlabelled::parse_resize)]
    pub resize: Option<[usize; 2]>,
}

impl DataArgs {
    /// The settings the jobs read (they open the dataset).
    pub fn settings(&self) -> cut::data::DataSettings {
        cut::data::DataSettings {
            folder: self.data.clone().map(|d| (d, self.index.clone())),
            val_fraction: self.val_fraction,
            batch: self.batch,
            max_len: self.max_len,
            resize: self.resize,
        }
    }
}

/// Fine-tuning a pre-trained model (after pruning, or a split's parts with the seam in place):
/// one set of flags and defaults for `prune` and `split`.
#[derive(clap::Args, Clone, Debug)]
pub struct FinetuneArgs {
    /// Fine-tuning steps (0 skips fine-tuning), validation-selected.
    #[arg(long, default_value_t = 300)]
    pub finetune_steps: usize,
    /// Fine-tuning learning rate (Adam); the default measured best on the demo (docs/pruning.md).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Multiply the learning rate by --gamma every this many steps.
    #[arg(long, default_value_t = 1000)]
    pub step_size: usize,
    /// Learning-rate decay factor applied every --step-size steps.
    #[arg(long, default_value_t = 0.7)]
    pub gamma: f64,
    /// Validate every N fine-tuning steps (the best validation loss is kept).
    #[arg(long, default_value_t = 50)]
    pub val_every: usize,
    /// Seed of the batch order and any random draw (scores, initial values): the same seed and
    /// inputs give the same bytes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl FinetuneArgs {
    /// The schedule the jobs run, with the weight decay and batch-norm mode of the command
    /// (prune exposes both; split fine-tunes without decay, batch norm training).
    pub fn schedule(&self, weight_decay: f64, freeze_norm: bool) -> cut::train::Schedule {
        cut::train::Schedule {
            seed: self.seed,
            steps: self.finetune_steps,
            lr: self.lr,
            weight_decay,
            step_size: self.step_size,
            gamma: self.gamma,
            val_every: self.val_every,
            freeze_norm,
        }
    }
}

/// A command-line parser for one of the library's named option sets: its spellings are the
/// possible values help lists and errors name.
pub fn choice<T: cut::choice::Choice>() -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(T::ALL.iter().map(|c| c.name()))
        .map(|name| T::parse(&name).expect("clap accepts listed names only"))
}

/// "2.5G", "800M", "12k" or a plain integer.
pub fn parse_count(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let (number, scale) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G') => (&t[..t.len() - 1], 1e9),
        Some('t' | 'T') => (&t[..t.len() - 1], 1e12),
        _ => (t, 1.0),
    };
    match number.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v * scale >= 0.5 => Ok((v * scale).round() as u64),
        _ => Err(format!("'{text}' is not a positive count such as 800M or 2.5G")),
    }
}

/// Parses "480x640" (height x width, both positive), for clap.
pub fn parse_hw(text: &str) -> std::result::Result<(usize, usize), String> {
    let parts: Vec<usize> = text.split('x').filter_map(|p| p.trim().parse().ok()).collect();
    match parts.as_slice() {
        [h, w] if *h > 0 && *w > 0 && text.split('x').count() == 2 => Ok((*h, *w)),
        _ => Err(format!("'{text}': expected HxW such as 480x640")),
    }
}
