//! Task-selective pruning (the CUT method): keep the selected tasks' heads, score every conv and
//! linear weight per selected task, fuse the backbone decisions, reach a target sparsity, fine-tune
//! with the masks fixed, and evaluate before and after.

pub mod channel_select;
pub mod channels;
pub mod mask;
pub mod policy;
pub mod score;
pub mod structured;
pub mod types;

use crate::choice::Choice;
use crate::data::{Dataset, Split};
use crate::eval::evaluate;
use crate::graph::interpreter::Params;
use crate::graph::{Model, TaskKind, TaskSpec};
use crate::metrics::TaskMetrics;
use crate::train::{train, TrainConfig};
use anyhow::{bail, Result};
use channel_select::{Budget, ChannelSearch, Cost, WidthRules};
use mask::{Fusion, MaskResult, MaskSearch};
use policy::{PruneRequest, Resolved};
use score::{Criterion, Precision, Strategy};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// Zero individual weights; tensors keep their shapes (the reference's).
    Weight,
    /// Remove whole channels; tensors get smaller and the model faster.
    Channel,
}

crate::choices!(Granularity { Weight => "weight", Channel => "channel" });

/// What channel pruning did.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelOutcome {
    pub budget: Budget,
    /// The rules the widths obey, with the per-layer cap used.
    pub rules: WidthRules,
    /// Whether the per-layer cap was raised above the configured one to meet the budget.
    pub layer_ratio_widened: bool,
    /// Whether channels the fold cannot reproduce exactly were protected, and how many.
    pub exact_fold: bool,
    pub protected_channels: usize,
    /// Cost of the selected-task model before and after.
    pub before: Cost,
    pub after: Cost,
    pub macs_removed: f64,
    pub keep_ratio_per_task: f64,
    pub search_iterations: usize,
    /// Every group whose width changed.
    pub layers: Vec<WidthChange>,
    /// Padded consumers that received a non-zero constant: the pruned model matches the zeroed one
    /// exactly only away from their borders.
    pub inexact_fold: Vec<String>,
    /// Text models: the sequence length the MACs are counted at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq_len: Option<usize>,
}

/// One group whose width changed, in its units (channels, neurons, heads).
#[derive(Clone, Debug, Serialize)]
pub struct WidthChange {
    /// Layers producing the group's channels (the first names the group).
    pub producers: Vec<String>,
    /// "channels", "neurons" or "heads".
    pub unit: &'static str,
    pub before: usize,
    pub after: usize,
}

#[derive(Clone, Debug)]
pub struct PruneConfig {
    /// What the user asked, as given (granularity, width rules, layout).
    pub request: PruneRequest,
    /// The defaults the request resolved to (criterion, sparsity, channel budget and rules).
    pub resolved: Resolved,
    /// The method's options that no other choice decides.
    pub options: PruneOptions,
    /// Calibration batches in use: the asked or default count, capped at one pass over the data.
    pub calib_batches: usize,
    /// Allowed distance between asked-for and reached sparsity.
    pub tolerance: f64,
    /// Share of the train list held out as the validation split.
    pub val_fraction: f64,
    /// Fine-tuning; `schedule.steps == 0` skips it.
    pub finetune: TrainConfig,
    /// Storage dtype of the output; the final evaluation uses weights rounded to it.
    pub output_kind: Kind,
}

/// The options of `cut prune` that no other choice decides: how scores are computed and fused,
/// the channel fold, the evaluation split.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    pub fusion: Fusion,
    /// With vote fusion: the selected tasks that must keep a backbone weight (default min(2, tasks)).
    pub min_votes: Option<usize>,
    /// Channel pruning: never remove a channel whose constant the bias fold cannot reproduce
    /// exactly (non-zero, read by a padded convolution).
    pub exact_fold: bool,
    /// None: [`DEFAULT_CALIB_BATCHES`], at most one pass over the train split.
    pub calib_batches: Option<usize>,
    pub strategy: Strategy,
    /// Arithmetic of the scoring passes.
    pub precision: Precision,
    pub eval_split: Split,
    /// Score and fine-tune every selected task by distillation from the input model, labels or
    /// not (tasks without labels are distilled anyway).
    pub distill: bool,
}

/// What happened, phase by phase, for the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timings {
    pub load_s: f64,
    pub score_s: f64,
    pub mask_s: f64,
    pub eval_before_s: f64,
    pub finetune_s: f64,
    pub eval_after_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Accuracy {
    pub split: String,
    pub images: usize,
    /// The input model, selected tasks only.
    pub before: Vec<TaskMetrics>,
    /// Right after masking, before fine-tuning.
    pub pruned: Vec<TaskMetrics>,
    /// The output model (after fine-tuning, in the output dtype).
    pub after: Vec<TaskMetrics>,
    /// delta_m of `after` against `before`, percent (positive is better).
    pub delta_m: f64,
    pub delta_m_before_finetune: f64,
    /// How closely the output model follows the input model on the same split, per task, with
    /// no labels: top-1 agreement and KL for class outputs, relative L2 and cosine for values.
    pub fidelity: Vec<TaskMetrics>,
}

/// What pruning removed, by granularity.
pub enum Pruned {
    /// Zeroed weights: the keep mask (1 keeps) of every pruned tensor, and the sparsity search.
    Weights {
        masks: BTreeMap<String, Tensor>,
        search: MaskResult,
    },
    /// Removed channels.
    Channels(ChannelOutcome),
}

pub struct PruneOutcome {
    /// The model restricted to the selected tasks.
    pub model: Model,
    /// Pruned (and fine-tuned) parameters on the CPU.
    pub params: Params,
    pub pruned: Pruned,
    pub accuracy: Option<Accuracy>,
    pub finetune_best_step: Option<usize>,
    pub finetune_log: Vec<crate::train::LogEntry>,
    pub timings: Timings,
}

impl PruneOutcome {
    /// The channel outcome, for channel granularity.
    pub fn channels(&self) -> Option<&ChannelOutcome> {
        match &self.pruned {
            Pruned::Channels(c) => Some(c),
            Pruned::Weights { .. } => None,
        }
    }

    /// The share removed (weights zeroed, or MACs removed), the per-task keep share the search
    /// settled on, and its iterations.
    pub fn search_figures(&self) -> (f64, f64, usize) {
        match &self.pruned {
            Pruned::Weights { search, .. } => (search.sparsity, search.keep_ratio, search.iterations),
            Pruned::Channels(c) => (c.macs_removed, c.keep_ratio_per_task, c.search_iterations),
        }
    }
}

/// Checks that the dataset has a label for every selected task that is not distilled.
pub fn check_labels(tasks: &[TaskSpec]) -> Result<()> {
    for t in tasks.iter().filter(|t| !t.distill) {
        if matches!(t.kind, TaskKind::Classification | TaskKind::Regression) {
            bail!("the dataset has no label for task '{}' ({}); the NYUv2 layout has segmentation, normal and depth labels", t.name, t.kind.as_str());
        }
    }
    Ok(())
}

fn eval_on(
    model: &Model,
    params: &Params,
    data: &Dataset,
    cfg: &PruneConfig,
    tasks: &[TaskSpec],
    device: Device,
) -> Result<(Vec<TaskMetrics>, usize)> {
    let items = data.split(cfg.options.eval_split, cfg.val_fraction)?;
    evaluate(model, params, items, tasks, cfg.finetune.batch, device, |_| {})
}

/// What the structured removal works on, decided once from the granularity: single weights, or
/// the graph's channel groups (channels, neurons, attention heads). Each has its own score type,
/// so a score never reaches a path it was not made for.
enum Structure {
    Weights,
    Channels(Vec<channels::ChannelGroup>),
}

impl Structure {
    fn of(model: &Model, granularity: Granularity) -> Result<Structure> {
        Ok(match granularity {
            Granularity::Weight => Structure::Weights,
            Granularity::Channel => Structure::Channels(channels::channel_groups(&model.graph)?),
        })
    }
}

/// What scoring reads besides the model: the calibration batches (when the criterion needs data)
/// and where to report progress.
struct Scoring<'a, 'p> {
    model: &'a Model,
    params: &'a Params,
    selected: &'a [TaskSpec],
    data: Option<&'a Dataset>,
    cfg: &'a CheckedConfig,
    progress: &'p mut dyn FnMut(&str, usize, usize),
}

impl Scoring<'_, '_> {
    fn calibration(&self) -> Result<score::Calibration> {
        let Some(data) = self.data else {
            bail!(
                "--criterion {} scores with calibration data",
                self.cfg.resolved.criterion.name()
            );
        };
        Ok(score::Calibration {
            items: data.split(Split::Train, self.cfg.val_fraction)?,
            batches: self.cfg.calib_batches,
            batch_size: self.cfg.finetune.batch,
            seed: self.cfg.finetune.schedule.seed,
            device: self.cfg.finetune.device,
        })
    }

    /// Per-weight scores: magnitude, random or snip.
    fn weights(&mut self) -> Result<score::Scores> {
        let (model, params, tasks, cfg) = (self.model, self.params, self.selected, self.cfg);
        let batches = cfg.calib_batches;
        Ok(match cfg.resolved.criterion {
            Criterion::Magnitude => score::magnitude(model, params, tasks),
            Criterion::Random => score::random(model, params, tasks, cfg.finetune.schedule.seed),
            Criterion::Snip => {
                let calibration = self.calibration()?;
                let progress = &mut self.progress;
                score::snip(
                    model,
                    params,
                    tasks,
                    calibration,
                    cfg.options.strategy,
                    cfg.options.precision,
                    |i| progress("score", i, batches),
                )?
            }
            Criterion::Taylor => {
                crate::usage_bail!("--criterion taylor scores whole channels: use it with --granularity channel")
            }
        })
    }

    /// Per-channel scores: taylor directly, any other criterion summed from its weight scores.
    fn channels(&mut self, groups: &[channels::ChannelGroup]) -> Result<channel_select::ChannelScores> {
        if self.cfg.resolved.criterion != Criterion::Taylor {
            let weights = self.weights()?;
            return channel_select::channel_scores_from_weights(&self.model.graph, groups, &weights);
        }
        let calibration = self.calibration()?;
        let batches = self.cfg.calib_batches;
        let progress = &mut self.progress;
        score::taylor(self.model, self.params, self.selected, groups, calibration, |i| {
            progress("score", i, batches)
        })
    }
}

/// Refuses a criterion that cannot run: one that scores with data but has none, or Taylor (a
/// channel score) at weight granularity.
pub fn check_criterion(criterion: Criterion, granularity: Granularity, has_data: bool) -> Result<()> {
    let name = criterion.name();
    if criterion.needs_data() && !has_data {
        crate::usage_bail!(
            "--criterion {name} scores with calibration data: give --data DIR, or use --criterion magnitude or random"
        );
    }
    if criterion == Criterion::Taylor && granularity == Granularity::Weight {
        crate::usage_bail!("--criterion taylor scores whole channels: use it with --granularity channel");
    }
    Ok(())
}

/// A [`PruneConfig`] that passed [`PruneConfig::check`]. [`prune`] takes only this, so the checks
/// run once, before any work.
#[derive(Clone, Debug)]
pub struct CheckedConfig {
    cfg: PruneConfig,
    has_data: bool,
}

/// Calibration batches when `--calib-batches` is not given (at most one pass over the train split).
pub const DEFAULT_CALIB_BATCHES: usize = 20;

impl CheckedConfig {
    /// Caps the calibration batches at one pass over the `train` samples (in full batches, as the
    /// shuffled loader draws them): more would score the same samples again. Returns the warning
    /// to give when it caps.
    pub fn cap_calibration(&mut self, train: usize) -> Option<String> {
        let batch = self.cfg.finetune.batch.max(1);
        let per_pass = (train / batch).max(1);
        let asked = self.cfg.calib_batches;
        if !self.cfg.resolved.criterion.needs_data() || asked <= per_pass {
            return None;
        }
        self.cfg.calib_batches = per_pass;
        Some(format!(
            "--calib-batches {asked}: the train split holds {train} samples, {per_pass} batches of {batch}; scoring on those {per_pass}"
        ))
    }
}

impl CheckedConfig {
    /// The fine-tuning loss weights, once the tasks' losses are known (a distilled task's differs
    /// from its kind's).
    pub fn set_lambdas(&mut self, lambdas: BTreeMap<String, f64>) {
        self.cfg.finetune.lambdas = lambdas;
    }
}

impl std::ops::Deref for CheckedConfig {
    type Target = PruneConfig;
    fn deref(&self) -> &PruneConfig {
        &self.cfg
    }
}

impl PruneConfig {
    /// Every check of the settings that needs no model: usage errors naming the option. `has_data`:
    /// whether calibration and fine-tuning data will be given.
    pub fn check(self, has_data: bool) -> Result<CheckedConfig> {
        check_criterion(self.resolved.criterion, self.request.granularity, has_data)?;
        if self.resolved.criterion == Criterion::Taylor
            && (self.options.strategy != Strategy::Shared || self.options.precision != Precision::F32)
        {
            crate::usage_bail!(
                "--scoring and --precision apply to --criterion snip; taylor runs one f32 forward per batch"
            );
        }
        if self.request.granularity == Granularity::Weight && self.resolved.channel_budget.is_some() {
            crate::usage_bail!("--target-macs and --target-params budget channel pruning: add --granularity channel");
        }
        if !has_data && self.options.distill {
            crate::usage_bail!("--distill learns from the model's outputs on inputs: give --data (images, arrays or texts; no labels needed)");
        }
        if !has_data && self.finetune.schedule.steps > 0 {
            crate::usage_bail!("fine-tuning needs --data DIR; pass --finetune-steps 0 to prune without data");
        }
        self.resolved.channel_rules.check()?;
        if self.request.seq_len == Some(0) {
            crate::usage_bail!("--seq-len must be at least 1");
        }
        self.finetune.validate()?;
        Ok(CheckedConfig { cfg: self, has_data })
    }
}

/// Runs the whole method. `full` is the input model with all its tasks and `params` its weights (on
/// `cfg.finetune.device`); `data` must be given exactly when the config was checked with data;
/// `progress(phase, done, total)` reports long phases.
pub fn prune(
    full: &Model,
    params: &Params,
    selected: &[TaskSpec],
    data: Option<&Dataset>,
    cfg: &CheckedConfig,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<PruneOutcome> {
    let mut timings = Timings::default();
    if data.is_some() != cfg.has_data {
        bail!(
            "prune: the settings were checked for a run {} data",
            if cfg.has_data { "with" } else { "without" }
        );
    }
    if data.is_some() {
        check_labels(selected)?;
    }
    let names: Vec<&str> = selected.iter().map(|t| t.name.as_str()).collect();
    let model = full.keep_tasks(&names);
    let kept: Params = model
        .graph
        .param_specs()
        .iter()
        .map(|s| (s.name.clone(), params[&s.name].shallow_clone()))
        .collect();
    // Distilled tasks learn from the model as loaded, whose outputs every batch then carries.
    let taught = data.map(|d| crate::data::teacher::for_tasks(d, &model, &kept, selected, cfg.finetune.device));
    let data = taught.as_ref();

    let structure = Structure::of(&model, cfg.request.granularity)?;
    let mut scoring = Scoring {
        model: &model,
        params: &kept,
        selected,
        data,
        cfg,
        progress: &mut progress,
    };
    // Scores live only until their removal is decided (they are as large as the weights).
    let t = Instant::now();
    let (out_model, masked, removal) = match &structure {
        Structure::Weights => {
            let scores = scoring.weights()?;
            timings.score_s = t.elapsed().as_secs_f64();
            prune_weights(&model, &kept, &scores, cfg)?
        }
        Structure::Channels(groups) => {
            let scores = scoring.channels(groups)?;
            timings.score_s = t.elapsed().as_secs_f64();
            let seq = budget_seq_len(&model, data, cfg)?;
            prune_channels(&model, &kept, groups, &scores, seq, cfg)?
        }
    };
    timings.mask_s = t.elapsed().as_secs_f64() - timings.score_s;
    let pruned = Shrunk {
        model: out_model,
        params: masked,
        removal,
    };
    let measured = match data {
        Some(data) => {
            let tasks = RunTasks {
                trained: selected,
                measured: &crate::tasks::distill::measured(selected, data.labelled()),
            };
            measure_and_finetune(&model, &kept, &pruned, data, &tasks, cfg, &mut progress, &mut timings)?
        }
        None => Measured::untouched(&pruned.params),
    };
    Ok(PruneOutcome {
        model: pruned.model,
        params: measured.params,
        pruned: pruned.removal,
        accuracy: measured.accuracy,
        finetune_best_step: measured.best_step,
        finetune_log: measured.log,
        timings,
    })
}

/// The model after removal, before fine-tuning: the graph (narrower at channel granularity), its
/// parameters (masked at weight granularity) and what was removed.
struct Shrunk {
    model: Model,
    params: Params,
    removal: Pruned,
}

/// Weight granularity: the fused masks searched to the sparsity, and the masked parameters.
fn prune_weights(
    model: &Model,
    kept: &Params,
    scores: &score::Scores,
    cfg: &PruneConfig,
) -> Result<(Model, Params, Pruned)> {
    let search = MaskSearch::new(model, scores, cfg.options.fusion, cfg.options.min_votes)?
        .search(cfg.resolved.sparsity, cfg.tolerance)?;
    let masks: BTreeMap<String, Tensor> = search
        .masks
        .iter()
        .map(|(k, v)| (k.clone(), v.shallow_clone()))
        .collect();
    let masked: Params = {
        let _guard = tch::no_grad_guard();
        kept.iter()
            .map(|(n, p)| {
                (
                    n.clone(),
                    masks
                        .get(n)
                        .map(|m| p * m.to_device(p.device()))
                        .unwrap_or_else(|| p.copy()),
                )
            })
            .collect()
    };
    Ok((model.clone(), masked, Pruned::Weights { masks, search }))
}

/// Channel granularity: the channels, neurons and heads to keep searched to the budget under the
/// width rules (protecting channels whose removal could not be folded exactly, with --fold exact),
/// then removed physically. A text model's MACs count at `seq` tokens.
fn prune_channels(
    model: &Model,
    kept: &Params,
    groups: &[channels::ChannelGroup],
    scores: &channel_select::ChannelScores,
    seq: Option<usize>,
    cfg: &PruneConfig,
) -> Result<(Model, Params, Pruned)> {
    let budget = cfg
        .resolved
        .channel_budget
        .unwrap_or(Budget::MacShare(cfg.resolved.sparsity.get()));
    let at_seq = at_seq_len(model, seq);
    let mut search = ChannelSearch::from_channel_scores(
        &at_seq,
        groups,
        scores,
        cfg.options.fusion,
        cfg.options.min_votes,
        cfg.resolved.channel_rules,
    )?;
    let mut protected_channels = 0;
    if cfg.options.exact_fold {
        let hazards = structured::fold_hazards(model, kept, groups)?;
        protected_channels = hazards.iter().flatten().filter(|&&h| h).count();
        search = search.protect(hazards);
    }
    let start = cfg.resolved.channel_rules.max_layer_ratio;
    let plan = search.search_with_caps(budget, &layer_caps(cfg))?;
    let shrunk = structured::shrink(model, kept, groups, &plan.keep)?;
    let outcome = ChannelOutcome {
        budget,
        rules: plan.rules,
        layer_ratio_widened: plan.rules.max_layer_ratio > start,
        exact_fold: cfg.options.exact_fold,
        protected_channels,
        before: plan.before,
        // What was written: folds may have given consumers new biases.
        after: channel_select::cost(&at_seq_len(&shrunk.model, seq).graph, &[], &[])?,
        macs_removed: plan.macs_removed,
        keep_ratio_per_task: plan.keep_ratio,
        search_iterations: plan.iterations,
        layers: width_changes(groups, &plan.keep),
        inexact_fold: shrunk.inexact,
        seq_len: seq,
    };
    Ok((shrunk.model, shrunk.params, Pruned::Channels(outcome)))
}

/// Every group the plan narrows, in its units.
fn width_changes(groups: &[channels::ChannelGroup], keep: &[Option<Vec<i64>>]) -> Vec<WidthChange> {
    groups
        .iter()
        .zip(keep)
        .filter_map(|(g, k)| {
            let width = g.unit.width();
            k.as_ref().map(|k| WidthChange {
                producers: g.producers.clone(),
                unit: g.unit.plural(),
                before: g.units(),
                after: k.len() / width,
            })
        })
        .collect()
}

/// The model with its sequence length set to `seq` (a text model's MAC count), or as it is.
fn at_seq_len(model: &Model, seq: Option<usize>) -> std::borrow::Cow<'_, Model> {
    match seq {
        Some(seq) => {
            let mut m = model.clone();
            m.graph.sizes.insert("seq".into(), seq);
            std::borrow::Cow::Owned(m)
        }
        None => std::borrow::Cow::Borrowed(model),
    }
}

/// The sequence length a text model's MAC budget counts at: --seq-len, else the calibration
/// data's mean real length, else the graph's default; None for a model that reads no tokens.
fn budget_seq_len(model: &Model, data: Option<&Dataset>, cfg: &PruneConfig) -> Result<Option<usize>> {
    let Some(mask) = model.graph.input_named_by(crate::graph::InputRole::AttentionMask) else {
        return Ok(None);
    };
    Ok(Some(match (cfg.request.seq_len, data) {
        (Some(seq), _) => seq,
        (None, Some(data)) => crate::data::mean_tokens(&data.split(Split::Train, cfg.val_fraction)?, mask)?,
        (None, None) => model.graph.sizes.get("seq").copied().unwrap_or(128),
    }))
}

/// The parameters to write (on the CPU, rounded to the output dtype when measured), with the
/// accuracy and fine-tuning record when there was data.
struct Measured {
    params: Params,
    accuracy: Option<Accuracy>,
    best_step: Option<usize>,
    log: Vec<crate::train::LogEntry>,
}

impl Measured {
    /// Without data: the pruned parameters as they are, nothing measured.
    fn untouched(params: &Params) -> Measured {
        Measured {
            params: params
                .iter()
                .map(|(k, v)| (k.clone(), v.to_device(Device::Cpu)))
                .collect(),
            accuracy: None,
            best_step: None,
            log: Vec::new(),
        }
    }
}

/// The selected tasks as fine-tuning trains them and as evaluation measures them: a distilled
/// task is measured by its labels where the data has them.
struct RunTasks<'a> {
    trained: &'a [TaskSpec],
    measured: &'a [TaskSpec],
}

/// Evaluates the model before and after removal, fine-tunes (masks fixed at weight granularity),
/// and evaluates what will be written: weights rounded to the output dtype.
#[allow(clippy::too_many_arguments)]
fn measure_and_finetune(
    model: &Model,
    kept: &Params,
    shrunk: &Shrunk,
    data: &Dataset,
    tasks: &RunTasks,
    cfg: &PruneConfig,
    progress: &mut dyn FnMut(&str, usize, usize),
    timings: &mut Timings,
) -> Result<Measured> {
    let device = cfg.finetune.device;
    let mut measured = Measured::untouched(&shrunk.params);
    let t = Instant::now();
    let (pruned, _) = eval_on(&shrunk.model, &shrunk.params, data, cfg, tasks.measured, device)?;
    timings.eval_before_s = t.elapsed().as_secs_f64();
    if cfg.finetune.schedule.steps > 0 {
        let t = Instant::now();
        let outcome = train(
            &shrunk.model,
            &shrunk.params,
            tasks.trained,
            data.split(Split::Train, cfg.val_fraction)?,
            data.split(Split::Val, cfg.val_fraction)?,
            match &shrunk.removal {
                Pruned::Weights { masks, .. } if !masks.is_empty() => Some(masks),
                _ => None,
            },
            &TrainConfig {
                inference_mode: tasks.trained.iter().all(|t| t.distill),
                ..cfg.finetune.clone()
            },
            |s, _| progress("finetune", s, cfg.finetune.schedule.steps),
        )?;
        measured.best_step = Some(outcome.best_step);
        measured.log = outcome.log;
        measured.params = outcome.params;
        timings.finetune_s = t.elapsed().as_secs_f64();
    }
    // Score what will be written: weights rounded to the output dtype.
    measured.params = std::mem::take(&mut measured.params)
        .into_iter()
        .map(|(k, v)| {
            let r = if v.is_floating_point() {
                v.to_kind(cfg.output_kind).to_kind(Kind::Float)
            } else {
                v
            };
            (k, r)
        })
        .collect();
    let t = Instant::now();
    let on_device: Params = measured
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.to_device(device)))
        .collect();
    // The input and the output model in one pass: their metrics and the output's fidelity.
    let compared = crate::eval::evaluate_against(
        (&shrunk.model, &on_device),
        (model, kept),
        data.split(cfg.options.eval_split, cfg.val_fraction)?,
        tasks.measured,
        cfg.finetune.batch,
        device,
    )?;
    timings.eval_after_s = t.elapsed().as_secs_f64();
    let (before, after) = (compared.reference_metrics, compared.metrics);
    measured.accuracy = Some(Accuracy {
        split: cfg.options.eval_split.as_str().into(),
        images: compared.images,
        delta_m: crate::metrics::delta_m(&after, &before)?,
        delta_m_before_finetune: crate::metrics::delta_m(&pruned, &before)?,
        fidelity: compared.fidelity,
        before,
        pruned,
        after,
    });
    Ok(measured)
}

/// The per-layer caps tried in turn: the configured one, then (unless it was given) the wider
/// automatic ones.
fn layer_caps(cfg: &PruneConfig) -> Vec<f64> {
    let start = cfg.resolved.channel_rules.max_layer_ratio;
    std::iter::once(start)
        .chain(
            channel_select::AUTO_LAYER_RATIOS
                .into_iter()
                .filter(|&r| r > start && cfg.resolved.widen_layer_ratio),
        )
        .collect()
}
