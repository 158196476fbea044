//! SceneNet shape flags, shared by `cut new` and `cut train`.

use super::args::parse_input_size;
use anyhow::{Context, Result};
use cut::tasks::parse_task_specs;

pub fn parse_usize_list(flag: &str, text: &str) -> Result<Vec<usize>> {
    text.split(',')
        .map(|p| {
            p.trim()
                .parse::<usize>()
                .with_context(|| format!("{flag} '{text}': expected numbers separated by commas"))
        })
        .collect()
}

#[derive(clap::Args, Clone, Debug)]
pub struct SceneNetArgs {
    /// Tasks as name:kind[:outputs], e.g. seg:segmentation:13,normal:normal,depth:depth.
    #[arg(long, value_name = "SPECS")]
    pub tasks: Option<String>,
    /// BasicBlocks per stage (3,4,6,3 is ResNet-34, 2,2,2,2 ResNet-18).
    #[arg(long, default_value = "3,4,6,3")]
    pub blocks: String,
    /// Channels per stage.
    #[arg(long, default_value = "64,128,256,512")]
    pub widths: String,
    /// Channels of the 7x7 stem convolution.
    #[arg(long, default_value_t = 64)]
    pub stem_width: usize,
    /// Hidden channels of each head branch.
    #[arg(long, default_value_t = 1024)]
    pub head_width: usize,
    /// Dilation rates of the summed head branches.
    #[arg(long, default_value = "6,12,18,24")]
    pub rates: String,
    /// Default input size (HxW) recorded in the graph for compute counts (default 480x640). With
    /// --from an ONNX file: its input sizes, as `cut import --input` takes them.
    #[arg(long = "input", alias = "input-size", value_name = "HxW")]
    pub input_size: Option<String>,
}

impl SceneNetArgs {
    pub fn config(&self) -> Result<cut::families::scenenet::SceneNetConfig> {
        let Some(tasks) = &self.tasks else {
            cut::usage_bail!(
                "--tasks is required to build a model, e.g. --tasks seg:segmentation:13,normal:normal,depth:depth"
            );
        };
        let mut config = cut::families::scenenet::SceneNetConfig::reference(parse_task_specs(tasks)?);
        config.blocks = parse_usize_list("--blocks", &self.blocks)?;
        config.widths = parse_usize_list("--widths", &self.widths)?;
        config.stem_width = self.stem_width;
        config.head_width = self.head_width;
        config.rates = parse_usize_list("--rates", &self.rates)?;
        let [_, h, w] = parse_input_size(self.input_size.as_deref().unwrap_or("480x640"), 3)?;
        config.input_hw = [h, w];
        Ok(config)
    }
}
