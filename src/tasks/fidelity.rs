//! Fidelity: how closely one model's outputs follow another's (the pruned model's the original's)
//! on the same inputs, per task, with no labels. Class outputs (classification, segmentation, text
//! classes) score top-1 agreement and the KL divergence from the original's softmax to the other's
//! (temperature 1, averaged over samples, pixels or tokens); maps and vectors (depth, normals,
//! regression, an imported output) score the relative L2 error ||other - original|| / ||original||
//! over the whole split and the mean cosine similarity per sample. `eval::evaluate_against` runs
//! both models and feeds it; a distilled task's metrics are its fidelity to its teacher.

use super::Metric;
use crate::graph::TaskKind;
use tch::{Kind, Tensor};

/// The class axis of a kind's output ([N, C], [N, C, H, W], or [N, L, C] for tokens), or `None`
/// for a kind whose outputs are values.
pub(crate) fn class_axis(kind: TaskKind) -> Option<i64> {
    match kind {
        TaskKind::Classification | TaskKind::Segmentation | TaskKind::Sequence | TaskKind::SequenceMean => Some(1),
        TaskKind::Token => Some(2),
        TaskKind::Depth | TaskKind::Normal | TaskKind::Regression | TaskKind::Features | TaskKind::Output => None,
    }
}

/// One task's fidelity, accumulated over batches.
pub struct Fidelity {
    class_axis: Option<i64>,
    /// Positions scored (samples, pixels or real tokens), and of those where the top classes agree.
    positions: f64,
    agreeing: f64,
    kl: f64,
    /// Squared error and squared reference, summed; cosine similarities summed over samples.
    error2: f64,
    reference2: f64,
    cosine: f64,
    samples: f64,
}

impl Fidelity {
    pub fn new(kind: TaskKind) -> Fidelity {
        Fidelity::with_class_axis(class_axis(kind))
    }

    /// Fidelity of outputs with classes along `class_axis`, or of values (`None`).
    pub fn with_class_axis(class_axis: Option<i64>) -> Fidelity {
        Fidelity {
            class_axis,
            positions: 0.0,
            agreeing: 0.0,
            kl: 0.0,
            error2: 0.0,
            reference2: 0.0,
            cosine: 0.0,
            samples: 0.0,
        }
    }

    /// Adds a batch of the reference's outputs and the other model's. `weights` [N, L] counts a
    /// token's position (a text model's attention mask); `None` counts every position.
    pub fn update(&mut self, reference: &Tensor, other: &Tensor, weights: Option<&Tensor>) {
        let (r, o) = (reference.to_kind(Kind::Double), other.to_kind(Kind::Double));
        match self.class_axis {
            Some(axis) => self.update_classes(&r, &o, axis, weights),
            None => self.update_values(&r, &o),
        }
    }

    fn update_classes(&mut self, r: &Tensor, o: &Tensor, axis: i64, weights: Option<&Tensor>) {
        let agree = r
            .argmax(axis, false)
            .eq_tensor(&o.argmax(axis, false))
            .to_kind(Kind::Double);
        let (log_p, log_q) = (r.log_softmax(axis, Kind::Double), o.log_softmax(axis, Kind::Double));
        let kl = (log_p.exp() * (&log_p - log_q)).sum_dim_intlist([axis].as_slice(), false, Kind::Double);
        let w = match weights {
            Some(w) if w.size() == agree.size() => w.to_kind(Kind::Double),
            _ => agree.ones_like(),
        };
        self.positions += w.sum(Kind::Double).double_value(&[]);
        self.agreeing += (agree * &w).sum(Kind::Double).double_value(&[]);
        self.kl += (kl * &w).sum(Kind::Double).double_value(&[]);
    }

    fn update_values(&mut self, r: &Tensor, o: &Tensor) {
        let n = r.size()[0];
        let (r, o) = (r.reshape([n, -1]), o.reshape([n, -1]));
        self.error2 += (&o - &r).square().sum(Kind::Double).double_value(&[]);
        self.reference2 += r.square().sum(Kind::Double).double_value(&[]);
        let cos = Tensor::cosine_similarity(&o, &r, 1, 1e-12).clamp(-1.0, 1.0);
        self.cosine += cos.sum(Kind::Double).double_value(&[]);
        self.samples += n as f64;
    }

    /// What was scored (positions or samples) and the metrics; `None` values where nothing was.
    pub fn values(&self) -> (u64, Vec<Metric>) {
        let metric = |name: &str, value: Option<f64>, higher_is_better| Metric {
            name: name.into(),
            value,
            higher_is_better,
        };
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        match self.class_axis {
            Some(_) => (
                self.positions as u64,
                vec![
                    metric("agreement", ratio(self.agreeing, self.positions), true),
                    metric("kl", ratio(self.kl, self.positions), false),
                ],
            ),
            None => (
                self.samples as u64,
                vec![
                    metric("relative_l2", ratio(self.error2.sqrt(), self.reference2.sqrt()), false),
                    metric("cosine", ratio(self.cosine, self.samples), true),
                ],
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two samples of three classes: the top classes agree on the first (0 and 0) and not on the
    /// second (2 against 1). KL of identical rows is 0; of [ln 1, ln 3] against [ln 3, ln 1]
    /// (softmax 1/4, 3/4 against 3/4, 1/4) it is (1/4 ln(1/3) + 3/4 ln 3) = ln 3 / 2.
    #[test]
    fn classes_by_hand() {
        let mut f = Fidelity::new(TaskKind::Classification);
        let r = Tensor::from_slice(&[3.0f32, 1.0, 0.0, 0.0, 0.0, 0.0]).view([2, 3]);
        let o = Tensor::from_slice(&[3.0f32, 1.0, 0.0, 0.0, 1.0, 0.0]).view([2, 3]);
        f.update(&r, &o, None);
        let (count, m) = f.values();
        assert_eq!(count, 2);
        // Row 2: the reference is uniform, its argmax 0; the other's argmax 1.
        assert_eq!(m[0].value, Some(0.5));
        let e = 1.0f64.exp();
        let q = [1.0 / (2.0 + e), e / (2.0 + e), 1.0 / (2.0 + e)];
        let kl_row2: f64 = q.iter().map(|qi| (1.0 / 3.0) * ((1.0 / 3.0) / qi).ln()).sum();
        assert!((m[1].value.unwrap() - kl_row2 / 2.0).abs() < 1e-9, "{:?}", m[1]);

        let mut binary = Fidelity::new(TaskKind::Classification);
        let p = Tensor::from_slice(&[0.0f32, 3f32.ln()]).view([1, 2]);
        let q = Tensor::from_slice(&[3f32.ln(), 0.0]).view([1, 2]);
        binary.update(&p, &q, None);
        let kl = binary.values().1[1].value.unwrap();
        assert!((kl - 3f64.ln() / 2.0).abs() < 1e-6, "{kl}");
    }

    /// Tokens [1, 3, 2] with the last one padding: only two positions count.
    #[test]
    fn tokens_count_real_positions_only() {
        let mut f = Fidelity::new(TaskKind::Token);
        let r = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0, 1.0, 0.0]).view([1, 3, 2]);
        let o = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 0.0, 1.0]).view([1, 3, 2]);
        let mask = Tensor::from_slice(&[1i64, 1, 0]).view([1, 3]);
        f.update(&r, &o, Some(&mask));
        let (count, m) = f.values();
        assert_eq!((count, m[0].value), (2, Some(0.5)));
    }

    /// Values: reference rows (3, 4) and (0, 1), other rows (3, 4) and (0, 2): the error is 1 of
    /// a reference norm sqrt(26); cosines 1 and 1.
    #[test]
    fn values_by_hand() {
        let mut f = Fidelity::new(TaskKind::Depth);
        let r = Tensor::from_slice(&[3.0f32, 4.0, 0.0, 1.0]).view([2, 2]);
        let o = Tensor::from_slice(&[3.0f32, 4.0, 0.0, 2.0]).view([2, 2]);
        f.update(&r, &o, None);
        let (count, m) = f.values();
        assert_eq!(count, 2);
        assert!((m[0].value.unwrap() - 1.0 / 26f64.sqrt()).abs() < 1e-12);
        assert!((m[1].value.unwrap() - 1.0).abs() < 1e-12);
        assert!(!m[0].higher_is_better && m[1].higher_is_better);
        assert_eq!(Fidelity::new(TaskKind::Depth).values().1[0].value, None);
    }
}
