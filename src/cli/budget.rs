//! `cut prune`'s budget and width rules: how much goes, and what every layer keeps.

use cut::prune::policy::Fold;

#[derive(clap::Args)]
pub struct BudgetArgs {
    /// In (0, 1). With --granularity weight: the share of the output model's conv and linear
    /// weights that are zero (default 0.9). With --granularity channel: the share of the
    /// selected-task model's multiply-accumulates removed (default 0.5).
    #[arg(long)]
    pub sparsity: Option<f64>,
    /// Channel pruning: at most this many multiply-accumulates per image (e.g. 2.5G, 800M), instead
    /// of --sparsity.
    #[arg(long, value_name = "N", value_parser = super::args::parse_count, conflicts_with_all = ["sparsity", "target_params"])]
    pub target_macs: Option<u64>,
    /// Channel pruning: at most this many parameters (e.g. 5M), instead of --sparsity.
    #[arg(long, value_name = "N", value_parser = super::args::parse_count, conflicts_with = "sparsity")]
    pub target_params: Option<u64>,
    /// Channel pruning: kept channel and neuron counts are multiples of this (1 turns rounding
    /// off; attention heads and convolution groups go whole and are not rounded).
    #[arg(long, default_value_t = 8)]
    pub round_to: usize,
    /// Channel pruning: every layer keeps at least this many channels (or all, if it has fewer).
    #[arg(long, default_value_t = 8)]
    pub min_channels: usize,
    /// Channel pruning: at most this share of one layer's channels (heads, FFN neurons) is removed.
    /// Default: 0.5, raised
    /// to 0.75, 0.9 or 1 only when the budget needs it.
    #[arg(long)]
    pub max_layer_ratio: Option<f64>,
    /// Channel pruning. exact: keep every channel whose removal the bias fold cannot reproduce
    /// exactly (a non-zero constant read by a padded convolution), so the pruned model equals the
    /// zeroed one before fine-tuning. approximate: remove such channels too; the fold is then exact
    /// only away from those convolutions' borders.
    #[arg(long, value_parser = super::args::choice::<Fold>(), default_value = "exact")]
    pub fold: Fold,
    /// Channel pruning: every attention layer keeps at least this many heads (0 lets a layer lose
    /// its attention; it then adds only its output bias).
    #[arg(long, default_value_t = 1)]
    pub min_heads: usize,
    /// Models that read tokens: the sequence length MAC budgets are counted at (default: the mean length of
    /// the calibration data with --data, else the graph's 128).
    #[arg(long)]
    pub seq_len: Option<usize>,
}
