//! The int8 flags of `cut export` and `cut prune --onnx`.

use cut::onnx::quantize::{Int8Options, Method, DEFAULT_CALIBRATION};

#[derive(clap::Args, Clone, Debug)]
pub struct Int8Args {
    /// ONNX: write int8 (QDQ: int8 weights per output channel, uint8 activations per tensor),
    /// calibrated on --data (labels not needed); see docs/int8.md.
    #[arg(long)]
    pub int8: bool,
    /// int8: calibration inputs, evenly spaced over the training split.
    #[arg(long, default_value_t = DEFAULT_CALIBRATION, value_name = "N")]
    pub calibration: usize,
    /// int8: activation ranges from min-max, or percentile[:P] (the values at 100-P% and P% of
    /// all seen; P 99.999 by default).
    #[arg(long, default_value = "percentile", value_name = "METHOD", value_parser = Method::parse)]
    pub calibrate: Method,
    /// int8: what to keep f32 (softmax, layer norm, GELU always are): first (weight layers no
    /// other feeds), last (the heads' final layers), op types (Conv, MatMul, Add, Mul, Sigmoid,
    /// ...; docs/int8.md), node-name prefixes; none (the default) keeps nothing.
    #[arg(long, default_value = "none", value_name = "LIST")]
    pub keep_float: String,
}

impl Int8Args {
    /// The options, when --int8 is given.
    pub fn options(&self) -> Option<Int8Options> {
        self.int8.then(|| Int8Options {
            calibration: self.calibration,
            method: self.calibrate,
            keep_float: self
                .keep_float
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty() && *s != "none")
                .map(String::from)
                .collect(),
        })
    }
}
