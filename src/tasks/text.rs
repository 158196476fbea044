//! Text classes: `sequence` and `sequence-mean` (a class per text: labels [N]) and `token` (a class
//! per word: labels [N, L] on each word's first sub-word token, [`IGNORE`] elsewhere). The label is
//! the batch's array named after the task. Loss: cross-entropy. Metrics: accuracy and macro-F1
//! (the mean F1 over the classes present in the labels or the predictions), over labelled items.
//! Constant: the majority class of the fitted labels.

use super::{metric, Constant, KindDef, Metric, Metrics};
use crate::data::loader::Batch;
use crate::graph::TaskSpec;
use anyhow::{bail, Result};
use tch::{Kind, Reduction, Tensor};

pub use crate::data::text::IGNORE;

pub struct TextClasses {
    per_token: bool,
}

pub static TOKEN: TextClasses = TextClasses { per_token: true };
pub static SEQUENCE: TextClasses = TextClasses { per_token: false };

/// Logits [M, C] and labels [M] of the labelled items, whatever the prediction's rank.
fn rows(pred: &Tensor, label: &Tensor) -> (Tensor, Tensor) {
    let classes = pred.size()[pred.dim() - 1];
    let pred = pred.reshape([-1, classes]);
    let label = label.reshape([-1]).to_kind(Kind::Int64);
    let valid = label.ne(IGNORE);
    let idx = valid.nonzero().squeeze_dim(1);
    (pred.index_select(0, &idx), label.index_select(0, &idx))
}

impl KindDef for TextClasses {
    fn label<'b>(&self, task: &TaskSpec, batch: &'b Batch) -> Result<&'b Tensor> {
        batch.require_label(&task.name)
    }
    fn loss(&self, task: &TaskSpec, pred: &Tensor, label: &Tensor) -> Result<Tensor> {
        let want = if self.per_token { 3 } else { 2 };
        if pred.dim() != want || pred.dim() != label.dim() + 1 {
            bail!(
                "task '{}': a prediction {:?} does not fit labels {:?}",
                task.name,
                pred.size(),
                label.size()
            );
        }
        let (pred, label) = rows(pred, label);
        if label.numel() == 0 {
            return Ok(pred.sum(Kind::Float) * 0.0);
        }
        Ok(pred
            .to_kind(Kind::Float)
            .cross_entropy_loss::<Tensor>(&label, None, Reduction::Mean, IGNORE, 0.0))
    }
    fn metrics(&self, task: &TaskSpec) -> Box<dyn Metrics> {
        Box::new(ClassScores {
            classes: task.outputs,
            confusion: vec![0; task.outputs * task.outputs],
            out_of_range: 0,
        })
    }
    fn constant(&self, task: &TaskSpec) -> Result<Box<dyn Constant>> {
        Ok(Box::new(Majority {
            counts: vec![0; task.outputs.max(1)],
        }))
    }
}

/// A confusion matrix over the labelled items: rows truth, columns prediction.
struct ClassScores {
    classes: usize,
    confusion: Vec<u64>,
    out_of_range: u64,
}

impl Metrics for ClassScores {
    fn update(&mut self, pred: &Tensor, label: &Tensor) {
        let _guard = tch::no_grad_guard();
        let (pred, label) = rows(pred, label);
        let c = self.classes as i64;
        let known = label.ge(0).logical_and(&label.lt(c));
        self.out_of_range += (label.numel() as i64 - known.sum(Kind::Int64).int64_value(&[])) as u64;
        let idx = label.masked_select(&known) * c + pred.argmax(1, false).masked_select(&known);
        let counts = Vec::<i64>::try_from(&idx.bincount(None::<Tensor>, c * c).to_device(tch::Device::Cpu))
            .expect("bincount is int64");
        for (acc, v) in self.confusion.iter_mut().zip(counts) {
            *acc += v as u64;
        }
    }
    fn finish(&self) -> (u64, Vec<Metric>) {
        let c = self.classes;
        let total: u64 = self.confusion.iter().sum();
        let correct: u64 = (0..c).map(|k| self.confusion[k * c + k]).sum();
        let mut f1s = Vec::new();
        for k in 0..c {
            let tp = self.confusion[k * c + k] as f64;
            let truth: u64 = (0..c).map(|j| self.confusion[k * c + j]).sum();
            let predicted: u64 = (0..c).map(|i| self.confusion[i * c + k]).sum();
            if truth + predicted > 0 {
                f1s.push(2.0 * tp / (truth + predicted) as f64);
            }
        }
        let scored = total > 0;
        let accuracy = if scored { correct as f64 / total as f64 } else { 0.0 };
        let macro_f1 = if f1s.is_empty() {
            0.0
        } else {
            f1s.iter().sum::<f64>() / f1s.len() as f64
        };
        (
            total,
            vec![
                metric("accuracy", accuracy, true, scored),
                metric("macro_f1", macro_f1, true, scored),
            ],
        )
    }
    fn warnings(&self) -> Vec<String> {
        if self.out_of_range == 0 {
            return Vec::new();
        }
        vec![format!(
            "{} labels hold a class at or above the model's {} and were not scored",
            self.out_of_range, self.classes
        )]
    }
}

struct Majority {
    counts: Vec<u64>,
}

impl Constant for Majority {
    fn fit(&mut self, label: &Tensor) -> Result<()> {
        let label = label.reshape([-1]).to_kind(Kind::Int64);
        let c = self.counts.len() as i64;
        let known = label.ge(0).logical_and(&label.lt(c));
        let counts = Vec::<i64>::try_from(&label.masked_select(&known).bincount(None::<Tensor>, c))?;
        for (slot, n) in self.counts.iter_mut().zip(counts) {
            *slot += n as u64;
        }
        Ok(())
    }
    fn predict(&self, label: &Tensor) -> Tensor {
        // The first of the most frequent classes.
        let best = (0..self.counts.len())
            .rev()
            .max_by_key(|&k| self.counts[k])
            .unwrap_or(0);
        let mut logits = vec![0f32; self.counts.len()];
        logits[best] = 1.0;
        let mut shape = label.size();
        shape.push(self.counts.len() as i64);
        Tensor::from_slice(&logits)
            .expand(shape.as_slice(), false)
            .to_device(label.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::TaskKind;

    fn task() -> TaskSpec {
        TaskSpec {
            name: "pos".into(),
            kind: TaskKind::Token,
            outputs: 3,
            labels: None,
            distill: false,
        }
    }

    /// Truth 0 0 1 2 (and one ignored), prediction 0 1 1 1: accuracy 2/4; F1 of class 0:
    /// 2*1/(2+1) = 2/3, class 1: 2*1/(1+3) = 1/2, class 2: 0 (truth 1, predicted 0): macro 7/18.
    #[test]
    fn accuracy_and_macro_f1_by_hand() {
        let mut m = TOKEN.metrics(&task());
        let one_hot = |k: usize| {
            let mut v = [0f32; 3];
            v[k] = 1.0;
            v
        };
        let pred: Vec<f32> = [0, 1, 1, 1, 2].iter().flat_map(|&k| one_hot(k)).collect();
        let pred = Tensor::from_slice(&pred).view([1, 5, 3]);
        let label = Tensor::from_slice(&[0i64, 0, 1, 2, IGNORE]).view([1, 5]);
        m.update(&pred, &label);
        let (count, metrics) = m.finish();
        assert_eq!(count, 4);
        assert_eq!(metrics[0].value, Some(0.5));
        assert!((metrics[1].value.unwrap() - 7.0 / 18.0).abs() < 1e-12);
    }

    /// Cross-entropy over labelled tokens only: logits (0, ln 3) against class 1 is
    /// -ln(3/4); the ignored token's logits do not count.
    #[test]
    fn loss_skips_ignored_tokens() {
        let t = TaskSpec { outputs: 2, ..task() };
        let pred = Tensor::from_slice(&[0f32, 3f32.ln(), 100., -100.]).view([1, 2, 2]);
        let label = Tensor::from_slice(&[1i64, IGNORE]).view([1, 2]);
        let loss = TOKEN.loss(&t, &pred, &label).unwrap().double_value(&[]);
        assert!((loss + (0.75f64).ln()).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn majority_constant() {
        let t = TaskSpec {
            kind: TaskKind::Sequence,
            ..task()
        };
        let mut c = SEQUENCE.constant(&t).unwrap();
        c.fit(&Tensor::from_slice(&[2i64, 2, 1, IGNORE])).unwrap();
        let p = c.predict(&Tensor::from_slice(&[0i64, 1]));
        assert_eq!(p.size(), vec![2, 3]);
        assert_eq!(Vec::<i64>::try_from(p.argmax(1, false)).unwrap(), vec![2, 2]);
    }
}
