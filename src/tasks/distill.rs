//! Distill: a task trained and scored by matching the unpruned model's own output on the same
//! input (the teacher), so that it needs no labels. Class outputs (logits) match by the KL
//! divergence from the teacher's softmax to the model's at temperature [`TEMPERATURE`] (times its
//! square, as Hinton et al. scale it); maps and vectors by the mean squared error over the teacher
//! output's variance. The teacher's outputs reach a batch as labels named [`teacher_label`] (see
//! `crate::data::teacher`).
//!
//! At the unpruned weights the model is its teacher: that loss and all its gradients are zero.
//! Importance scores (snip, taylor) therefore differentiate a loss against targets drawn from the
//! teacher's own predictive distribution (a class drawn from its softmax; its output plus Gaussian
//! noise of its standard deviation). The expected square of that gradient is the Fisher
//! information, the curvature of the distillation loss there, so the expected score of a weight or
//! channel grows with what removing it costs the task.

use super::fidelity::{class_axis, Fidelity};
use super::{Constant, KindDef, Metric, Metrics};
use crate::data::loader::Batch;
use crate::data::teacher::teacher_label;
use crate::graph::{TaskKind, TaskSpec};
use anyhow::{anyhow, bail, Result};
use tch::{Kind, Tensor};

/// The softening of class outputs in the distillation loss. 1 (the teacher's softmax as it is)
/// measured better than DistilBERT's 2 on both demos (docs/distill.md).
pub const TEMPERATURE: f64 = 1.0;

/// The tasks as a run trains them: each distilled when `all` asks (`--distill`), when its kind
/// has no labels (an imported output nobody named), or when the data has no labels.
pub fn mark(tasks: &[TaskSpec], all: bool, labelled_data: bool) -> Vec<TaskSpec> {
    tasks
        .iter()
        .map(|t| TaskSpec {
            distill: t.kind != TaskKind::Features && (all || !labelled_data || !t.kind.has_labels()),
            ..t.clone()
        })
        .collect()
}

/// The tasks as a run measures them: by their labels where the data has labels for their kind,
/// by their fidelity to the teacher (as distilled tasks) where it has none.
pub fn measured(tasks: &[TaskSpec], labelled_data: bool) -> Vec<TaskSpec> {
    tasks
        .iter()
        .map(|t| TaskSpec {
            distill: t.distill && (!labelled_data || !t.kind.has_labels()),
            ..t.clone()
        })
        .collect()
}

/// Distillation of one kind's output: its class axis, or `None` for values.
pub struct Distill {
    class_axis: Option<i64>,
}

static CLASSES: Distill = Distill { class_axis: Some(1) };
static TOKENS: Distill = Distill { class_axis: Some(2) };
static VALUES: Distill = Distill { class_axis: None };

/// The distillation of a task of `kind`.
pub fn of(kind: TaskKind) -> &'static Distill {
    match class_axis(kind) {
        Some(1) => &CLASSES,
        Some(_) => &TOKENS,
        None => &VALUES,
    }
}

/// The scale a value output's squared error is divided by: the teacher output's variance over
/// the batch, kept off zero (a constant output, a batch of one scalar) by a thousandth of its
/// mean square.
fn value_scale(teacher: &Tensor) -> Tensor {
    let t = teacher.to_kind(Kind::Float);
    let var = t.var(false);
    let floor = t.square().mean(Kind::Float) * 1e-3 + 1e-12;
    var.maximum(&floor)
}

impl Distill {
    fn check(&self, task: &TaskSpec, pred: &Tensor, teacher: &Tensor) -> Result<()> {
        if pred.size() != teacher.size() {
            bail!(
                "task '{}': the output has shape {:?}, its teacher's {:?}; distillation matches outputs of one shape",
                task.name,
                pred.size(),
                teacher.size()
            );
        }
        Ok(())
    }
}

impl KindDef for Distill {
    fn label<'b>(&self, task: &TaskSpec, batch: &'b Batch) -> Result<&'b Tensor> {
        batch.label(&teacher_label(&task.name)).ok_or_else(|| {
            anyhow!(
                "task '{}' is distilled but the batch carries no teacher outputs for it",
                task.name
            )
        })
    }

    fn loss(&self, task: &TaskSpec, pred: &Tensor, teacher: &Tensor) -> Result<Tensor> {
        self.check(task, pred, teacher)?;
        let (p, t) = (pred.to_kind(Kind::Float), teacher.to_kind(Kind::Float));
        Ok(match self.class_axis {
            Some(axis) => {
                let log_p = (t / TEMPERATURE).log_softmax(axis, Kind::Float);
                let log_q = (p / TEMPERATURE).log_softmax(axis, Kind::Float);
                let kl = (log_p.exp() * (&log_p - log_q)).sum_dim_intlist([axis].as_slice(), false, Kind::Float);
                kl.mean(Kind::Float) * (TEMPERATURE * TEMPERATURE)
            }
            None => (p - &t).square().mean(Kind::Float) / value_scale(&t),
        })
    }

    fn scoring_loss(&self, task: &TaskSpec, pred: &Tensor, teacher: &Tensor) -> Result<Tensor> {
        self.check(task, pred, teacher)?;
        let (p, t) = (pred.to_kind(Kind::Float), teacher.to_kind(Kind::Float));
        Ok(match self.class_axis {
            Some(axis) => {
                let classes = t.size()[axis as usize];
                let probs = t.softmax(axis, Kind::Float).movedim(axis, -1).reshape([-1, classes]);
                let drawn = probs.multinomial(1, true).view([-1]);
                let logits = p.movedim(axis, -1).reshape([-1, classes]);
                logits.cross_entropy_for_logits(&drawn)
            }
            None => {
                let scale = value_scale(&t);
                let target = &t + t.randn_like() * scale.sqrt();
                (p - target).square().mean(Kind::Float) / (scale * 2.0)
            }
        })
    }

    fn metrics(&self, _task: &TaskSpec) -> Box<dyn Metrics> {
        Box::new(FidelityMetrics(Fidelity::with_class_axis(self.class_axis)))
    }

    fn constant(&self, task: &TaskSpec) -> Result<Box<dyn Constant>> {
        bail!(
            "task '{}' is distilled from the model: it has no labels to fit a constant predictor to",
            task.name
        )
    }
}

/// A distilled task's metrics: its fidelity to the teacher's outputs (the batch's labels).
struct FidelityMetrics(Fidelity);

impl Metrics for FidelityMetrics {
    fn update(&mut self, pred: &Tensor, teacher: &Tensor) {
        self.0.update(teacher, pred, None);
    }
    fn finish(&self) -> (u64, Vec<Metric>) {
        self.0.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(kind: TaskKind) -> TaskSpec {
        TaskSpec {
            name: "t".into(),
            kind,
            outputs: 2,
            labels: None,
            distill: true,
        }
    }

    /// Two classes, teacher logits [0, ln 3] (softmax at temperature T: 1/(1+3^(1/T)),
    /// 3^(1/T)/(1+3^(1/T))), the model's [0, 0] (1/2, 1/2): KL = sum p ln(2p), times T^2.
    #[test]
    fn class_loss_by_hand() {
        let t = Tensor::from_slice(&[0f32, 3f32.ln()]).view([1, 2]);
        let p = Tensor::from_slice(&[0f32, 0.0]).view([1, 2]);
        let loss = of(TaskKind::Classification)
            .loss(&task(TaskKind::Classification), &p, &t)
            .unwrap()
            .double_value(&[]);
        let s = 3f64.powf(1.0 / TEMPERATURE);
        let q = [1.0 / (1.0 + s), s / (1.0 + s)];
        let want = TEMPERATURE.powi(2) * q.iter().map(|qi| qi * (2.0 * qi).ln()).sum::<f64>();
        assert!((loss - want).abs() < 1e-6, "{loss} {want}");
        let zero = of(TaskKind::Classification)
            .loss(&task(TaskKind::Classification), &t, &t)
            .unwrap()
            .double_value(&[]);
        assert!(zero.abs() < 1e-7, "{zero}");
    }

    /// Teacher [1, 3] (variance 1), model [1, 5]: squared error (0 + 4) / 2 = 2, over 1.
    #[test]
    fn value_loss_by_hand() {
        let t = Tensor::from_slice(&[1f32, 3.0]).view([1, 2]);
        let p = Tensor::from_slice(&[1f32, 5.0]).view([1, 2]);
        let d = of(TaskKind::Depth);
        let loss = d.loss(&task(TaskKind::Depth), &p, &t).unwrap().double_value(&[]);
        assert!((loss - 2.0).abs() < 1e-6, "{loss}");
        // A constant teacher divides by a thousandth of its mean square, not by zero.
        let flat = Tensor::from_slice(&[2f32, 2.0]).view([1, 2]);
        let loss = d.loss(&task(TaskKind::Depth), &p, &flat).unwrap().double_value(&[]);
        assert!((loss - (1.0 + 9.0) / 2.0 / 4e-3).abs() < 1e-2, "{loss}");
        assert!(d.loss(&task(TaskKind::Depth), &p.view([2, 1]), &t).is_err());
    }

    /// At the teacher the distillation loss has no gradient; the scoring loss's gradient is
    /// non-zero, and its mean square over draws is the Fisher information: for two classes with
    /// teacher probabilities p, 1 - p, the logit gradient is p - 1[y = 0], of mean square p(1 - p).
    #[test]
    fn scoring_gradient_squares_to_the_fisher_information() {
        tch::manual_seed(7);
        let p = 0.8f64;
        let t = Tensor::from_slice(&[(p / (1.0 - p)).ln() as f32, 0.0]).view([1, 2]);
        let d = of(TaskKind::Classification);
        let spec = task(TaskKind::Classification);
        let pred = t.copy().set_requires_grad(true);
        let g = Tensor::run_backward(&[d.loss(&spec, &pred, &t).unwrap()], &[&pred], false, false);
        assert!(g[0].abs().max().double_value(&[]) < 1e-6);
        let draws = 4000;
        let mut square = 0.0;
        for _ in 0..draws {
            let pred = t.copy().set_requires_grad(true);
            let g = Tensor::run_backward(&[d.scoring_loss(&spec, &pred, &t).unwrap()], &[&pred], false, false);
            square += g[0].double_value(&[0, 0]).powi(2);
        }
        let fisher = square / draws as f64;
        assert!((fisher - p * (1.0 - p)).abs() < 0.02, "{fisher}");
    }
}
