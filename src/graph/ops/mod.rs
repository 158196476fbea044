//! Every op the graph knows, one file each. An op's file says all there is to say about it: its
//! parameters and their shapes, validation, shape inference, multiply-accumulates, evaluation on
//! tch, how it treats channels for structured pruning, and whether its value may share its input's
//! storage. Everything else (shape inference, the interpreter, the memory plan, channel groups,
//! physical channel removal) asks the op through [`OpDef`] instead of matching on it.
//!
//! Adding an op is one new file with a struct that implements [`OpDef`], plus one line in the
//! `registry!` call below: `file::Type => "json_name"`.

use super::{ParamRole, Params};
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::Tensor;

/// Activation shape of one sample (batch dimension left out): `[C, H, W]`, `[F]`, `[L, H]`, ...
pub type Shape = Vec<usize>;

/// A parameter tensor an op reads: its name, its role and the shape the op expects.
pub type ParamSlot = (String, ParamRole, Vec<usize>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Batch norm uses running statistics, dropout is off.
    Eval,
    /// Batch norm uses batch statistics and updates its running statistics; dropout is on.
    Train,
    /// Batch norm keeps using (and does not update) its running statistics; dropout is on.
    /// For fine-tuning with small batches, or a network whose statistics pruning has changed.
    TrainFrozenNorm,
}

/// What shape inference knows besides the node's input shapes.
pub struct ShapeCx<'a> {
    pub node: &'a str,
    /// The names of the node's inputs, for messages.
    pub input_names: &'a [String],
    /// For an input node: its per-sample shape at the sizes asked for.
    pub input: &'a [usize],
}

impl ShapeCx<'_> {
    /// The input's [C, H, W], or an error naming the node.
    pub fn spatial(&self, s: &Shape) -> Result<(usize, usize, usize)> {
        if s.len() != 3 {
            bail!("node '{}' needs a [C, H, W] input, gets {:?}", self.node, s);
        }
        Ok((s[0], s[1], s[2]))
    }
}

/// What evaluation knows besides the node's input values.
pub struct EvalCx<'a> {
    /// The node being evaluated.
    pub node: &'a str,
    pub params: &'a Params,
    /// The batches given to the graph, by input name, for the input op.
    pub inputs: &'a BTreeMap<String, Tensor>,
    pub mode: Mode,
}

impl EvalCx<'_> {
    pub fn param(&self, name: &str) -> Result<&Tensor> {
        self.params
            .get(name)
            .ok_or_else(|| anyhow!("tensor '{name}' is missing"))
    }
    pub fn opt_param(&self, name: &Option<String>) -> Result<Option<&Tensor>> {
        name.as_ref().map(|n| self.param(n)).transpose()
    }
}

/// Evaluates an op that reads no parameters and no graph inputs on `args`, inference mode (the
/// ops' hand-computed tests).
pub fn eval_alone(op: &dyn OpDef, args: &[&Tensor]) -> Result<Tensor> {
    let (params, inputs) = (Params::new(), BTreeMap::new());
    let cx = EvalCx {
        node: "alone",
        params: &params,
        inputs: &inputs,
        mode: Mode::Eval,
    };
    op.eval(&cx, args)
}

/// Evaluates an op that reads `params` on `args`, inference mode (hand-computed tests of ops with
/// weights).
pub fn eval_with_params(op: &dyn OpDef, params: &Params, args: &[&Tensor]) -> Result<Tensor> {
    let inputs = BTreeMap::new();
    let cx = EvalCx {
        node: "alone",
        params,
        inputs: &inputs,
        mode: Mode::Eval,
    };
    op.eval(&cx, args)
}

/// How an op treats channels (axis 1 of an activation), for structured pruning.
pub enum ChannelRule<'a> {
    /// The graph's input: a space (of the width the graph declares) that pruning may not change.
    Source,
    /// Reads its input's channels and writes a new space of `outputs` channels. `fixes` says why
    /// neither space may be pruned (a grouped convolution); `padded` that it sees zero padding,
    /// where a removed input channel's constant is not seen.
    Transform {
        /// Weight and bias pairs that read the input's channels through axis 1 of the weight and
        /// write the output's through its rows (axis 0) and the bias: one pair for a convolution
        /// or linear layer; an attention's query, key and value projections.
        weights: Vec<(&'a str, Option<&'a str>)>,
        /// What output channel k carries once its rows are zero: entry k of this tensor (the
        /// bias; an attention's value bias, which a head with constant queries and keys averages),
        /// or zero where there is none.
        constant: Option<&'a str>,
        outputs: usize,
        /// What one removable unit of the output is: a channel, a neuron, an attention head.
        unit: Unit,
        fixes: Option<&'static str>,
        padded: bool,
        /// Where its output's channels lie, counted from the last axis: 3 for a convolution's
        /// [C, H, W], 1 for a linear layer's [..., C].
        axis: usize,
    },
    /// One entry per channel of its input, along axis 0 of each tensor (a batch norm, a
    /// depthwise or grouped convolution with as many outputs as inputs): channel k in makes
    /// channel k out, or block b of channels in makes block b out. `zeroed` is the tensor whose
    /// entry a removed channel zeroes, so that what it passes on stays a constant (a depthwise
    /// weight: its bias alone, not a padded window of a constant).
    PerChannel {
        tensors: Vec<&'a str>,
        zeroed: Option<&'a str>,
        /// Channels that go together: a grouped convolution's group width (its groups mix the
        /// channels within them); 1 for a batch norm or a depthwise filter.
        block: usize,
    },
    /// Passes its input's channels on unchanged.
    Preserve,
    /// Channel k of every input lands in channel k of the output: all inputs share one space.
    Tie,
    /// Mixes channels with other axes: its inputs' channels and its output are fixed.
    Mix { why: &'static str },
    /// Takes `start..end` of its input's per-sample axis `axis` (a split's part): channels
    /// where the axis holds them; a part of a fused projection (queries, keys, values) where the
    /// axis holds those.
    Range { axis: usize, start: usize, end: usize },
    /// The same values in another shape: channels follow where the shape keeps their axis, or
    /// splits it into attention heads and their width, or merges heads back.
    Reshape,
    /// Moves axes: output axis i is input axis `perm[i]` (per sample).
    Permute { perm: &'a [usize] },
    /// The product of two computed values over their last two axes: attention's queries times
    /// keys tie their heads (and head widths), its scores times values tie their heads.
    Product,
    /// Joins its inputs' channels in order (a concatenation along channels): the output's channel
    /// k of input i is channel k of that input at the offset of the inputs before it.
    Join,
    /// A value of the model's own that reads its input for the batch size only (a constant): a
    /// scalar belongs to no channel space (a tie ignores it); a tensor's width is fixed.
    Constant { scalar: bool },
}

/// What one removable unit of a transform's output is, in the user's terms: a convolution's
/// channel, a linear layer's neuron, or an attention head (`width` channels removed together).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Channel,
    Neuron,
    Head {
        width: usize,
    },
    /// A group of a grouped convolution: `width` channels in, as many out.
    Group {
        width: usize,
    },
}

impl Unit {
    /// Channels per unit.
    pub fn width(self) -> usize {
        match self {
            Unit::Head { width } | Unit::Group { width } => width,
            Unit::Channel | Unit::Neuron => 1,
        }
    }
    /// The units' name in reports: channels, neurons, heads.
    pub fn plural(self) -> &'static str {
        match self {
            Unit::Channel => "channels",
            Unit::Neuron => "neurons",
            Unit::Head { .. } => "heads",
            Unit::Group { .. } => "convolution groups",
        }
    }
}

/// Everything about one op. The node name is passed where messages need it.
pub trait OpDef {
    /// Fewest and most inputs.
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    /// The parameter tensors the op reads, with their roles and expected shapes.
    fn params(&self) -> Vec<ParamSlot> {
        Vec::new()
    }
    /// Checks of the op's own fields that shape inference and evaluation rely on.
    fn validate(&self, _node: &str) -> Result<()> {
        Ok(())
    }
    /// The output shape of one sample.
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape>;
    /// Multiply-accumulates for one sample; `None` for ops that are not counted.
    fn macs(&self, _inputs: &[&Shape], _output: &Shape) -> Option<u64> {
        None
    }
    /// The output for a batch, with autograd where the mode trains.
    fn eval(&self, cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor>;
    fn channels(&self) -> ChannelRule<'_>;
    /// Whether the output may be a view of the input's storage at inference (for the memory plan).
    fn aliases_input(&self) -> bool {
        false
    }
    /// The op with its input channels set to `inputs` and its output channels to `outputs`
    /// (`None` keeps a side); `None` when the op has no such widths.
    fn resized(&self, _inputs: Option<usize>, _outputs: Option<usize>) -> Option<Op> {
        None
    }
    /// The op taking channels `start..end` instead (a slice of channels whose input shrank);
    /// `None` when it takes no range.
    fn resliced(&self, _start: usize, _end: usize) -> Option<Op> {
        None
    }
    /// The op with its per-sample target shape's axis `axis` (counted from the end, 1 the last)
    /// set to `size` (a reshape that splits channels into heads, after heads went); `None` when it
    /// has no target shape.
    fn reshaped(&self, _axis: usize, _size: usize) -> Option<Op> {
        None
    }
    /// The op reading a bias tensor of this name (it has none yet); `None` when it takes none.
    fn with_bias(&self, _bias: String) -> Option<Op> {
        None
    }
    /// The op as ONNX nodes reading the values `args` (see `crate::graph::onnx`, and `crate::onnx` for whole files); returns the value
    /// that holds its output.
    fn export(&self, _cx: &mut crate::graph::onnx::ExportCx, _args: &[&str]) -> Result<String> {
        bail!("has no ONNX form")
    }
}

/// Declares every op: `unit` ops have no fields, `data` ops carry a struct of their own. Each line
/// names the op's file, its type and its name in the graph JSON.
macro_rules! registry {
    (
        unit: [$($umod:ident::$unit:ident => $uname:literal),* $(,)?],
        data: [$($dmod:ident::$data:ident => $dname:literal),* $(,)?] $(,)?
    ) => {
        $(mod $umod; pub use $umod::$unit;)*
        $(mod $dmod; pub use $dmod::$data;)*

        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "op")]
        pub enum Op {
            $(#[serde(rename = $uname)] $unit,)*
            $(#[serde(rename = $dname)] $data($data),)*
        }

        impl Op {
            /// The op's definition.
            pub fn def(&self) -> &dyn OpDef {
                match self {
                    $(Op::$unit => &$unit,)*
                    $(Op::$data(op) => op,)*
                }
            }
            /// The op's name as the graph JSON spells it.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Op::$unit => $uname,)*
                    $(Op::$data(_) => $dname,)*
                }
            }
        }
    };
}

registry! {
    unit: [
        input::Input => "input",
        relu::Relu => "relu",
        add::Add => "add",
        global_avg_pool::GlobalAvgPool => "global_avg_pool",
        flatten::Flatten => "flatten",
        tanh::Tanh => "tanh",
        first_token::FirstToken => "first_token",
        masked_mean::MaskedMean => "masked_mean",
        sigmoid::Sigmoid => "sigmoid",
        hard_swish::HardSwish => "hard_swish",
        mul::Mul => "mul",
        sub::Sub => "sub",
        div::Div => "div",
        erf::Erf => "erf",
        matmul::MatMul => "matmul",
    ],
    data: [
        conv2d::Conv2d => "conv2d",
        batch_norm::BatchNorm => "batch_norm",
        max_pool::MaxPool => "max_pool",
        dropout::Dropout => "dropout",
        upsample::Upsample => "upsample",
        linear::Linear => "linear",
        gelu::Gelu => "gelu",
        embeddings::Embeddings => "embeddings",
        layer_norm::LayerNorm => "layer_norm",
        self_attention::SelfAttention => "self_attention",
        avg_pool::AvgPool => "avg_pool",
        token_pool::TokenPool => "token_pool",
        mask_pool::MaskPool => "mask_pool",
        token_unpool::TokenUnpool => "token_unpool",
        wire::Wire => "wire",
        resize::Resize => "resize",
        clip::Clip => "clip",
        hard_sigmoid::HardSigmoid => "hard_sigmoid",
        concat::Concat => "concat",
        reduce_mean::ReduceMean => "reduce_mean",
        constant::Constant => "constant",
        softmax::Softmax => "softmax",
        transpose::Transpose => "transpose",
        reshape::Reshape => "reshape",
        slice::Slice => "slice",
        conv_transpose2d::ConvTranspose2d => "conv_transpose2d",
        embedding::Embedding => "embedding",
        mask_bias::MaskBias => "mask_bias",
        position_ids::PositionIds => "position_ids",
        quantize_linear::QuantizeLinear => "quantize_linear",
        dequantize_linear::DequantizeLinear => "dequantize_linear",
    ],
}

pub use conv2d::LiveTaps;
pub use quantize_linear::code_range;

pub use gelu::GeluApproximation;
pub use upsample::UpsampleMode;
pub use wire::{channel_axis, dequantize_int8, quantize_int8, ScaleGranularity, WireFormat};

/// The product of sizes as a count, saturating at `u64::MAX` instead of wrapping.
pub(crate) fn saturating_product<'a>(sizes: impl Iterator<Item = &'a usize>) -> u64 {
    sizes.fold(1u64, |acc, &d| acc.saturating_mul(d as u64))
}

pub(crate) use super::arith::pair;
