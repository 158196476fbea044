//! Metrics and delta_m against values worked out by hand.

use cut::graph::{TaskKind, TaskSpec};
use cut::metrics::{delta_m, Accumulator, Metric, TaskMetrics};
use tch::{Device, Kind, Tensor};

fn task(kind: TaskKind, outputs: usize) -> TaskSpec {
    TaskSpec {
        name: "t".into(),
        kind,
        outputs,
        labels: None,
        distill: false,
    }
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-6, "{a} vs {b}");
}

#[test]
fn segmentation_miou_and_accuracy() {
    // 1x3 logits over 6 pixels; predictions 0,1,1,2,0,2 ; labels 0,1,2,2,255,0.
    let pred_class = [0i64, 1, 1, 2, 0, 2];
    let pred = Tensor::from_slice(&pred_class)
        .one_hot(3)
        .to_kind(tch::Kind::Float)
        .permute([1, 0])
        .reshape([1, 3, 1, 6]);
    let gt = Tensor::from_slice(&[0i64, 1, 2, 2, 255, 0]).reshape([1, 1, 6]);
    let t = task(TaskKind::Segmentation, 3);
    let mut acc = Accumulator::new(&t).unwrap();
    acc.update(&pred, &gt);
    let m = acc.finish(&t);
    // Valid pixels: 5 (the 255 is ignored). Correct: pixels 0, 1, 3 -> 3/5.
    assert_eq!(m.count, 5);
    close(m.get("pixel_acc").unwrap(), 0.6);
    // class 0: tp 1, gt 2 (px 0, 5), pred 1 (px 0)       -> IoU 1/2
    // class 1: tp 1, gt 1, pred 2 (px 1, 2)                -> IoU 1/2
    // class 2: tp 1, gt 2 (px 2, 3), pred 2 (px 3, 5)      -> IoU 1/3
    close(m.get("miou").unwrap(), (0.5 + 0.5 + 1.0 / 3.0) / 3.0);
}

#[test]
fn segmentation_mean_skips_absent_classes_and_resizes_nearest() {
    // 4 classes, class 3 never appears: the mean is over the 3 present classes.
    // The 1x2 prediction (class 1 | class 0) is resized (nearest) to the 2x4 label.
    let pred = Tensor::from_slice(&[0f32, 1., 1., 0., 0., 0., 0., 0.]).reshape([1, 4, 1, 2]);
    let gt = Tensor::from_slice(&[1i64, 1, 0, 0, 1, 2, 0, 0]).reshape([1, 2, 4]);
    let t = task(TaskKind::Segmentation, 4);
    let mut acc = Accumulator::new(&t).unwrap();
    acc.update(&pred, &gt);
    let m = acc.finish(&t);
    // Resized prediction per row: 1 1 0 0. Row 0 all right; row 1: (1 ok, 2 -> 1 wrong, 0, 0) -> 7/8.
    close(m.get("pixel_acc").unwrap(), 7.0 / 8.0);
    // class 0: tp 4, union 4 -> 1; class 1: tp 3, gt 3, pred 4 -> 3/4; class 2: tp 0, union 1 -> 0.
    close(m.get("miou").unwrap(), (1.0 + 0.75 + 0.0) / 3.0);
}

#[test]
fn normal_angles() {
    // Four pixels: gt +z, +z, +x, invalid (zero). Predictions: +z (0 deg), +x (90 deg),
    // (1, 1, 0) unnormalised (45 deg), anything.
    let gt = Tensor::from_slice(&[
        0f32, 0., 1., 0., /* y */ 0., 0., 0., 0., /* z */ 1., 1., 0., 0.,
    ])
    .reshape([1, 3, 1, 4]);
    let pred = Tensor::from_slice(&[
        0f32, 5., 2., 1., /* y */ 0., 0., 2., 1., /* z */ 3., 0., 0., 1.,
    ])
    .reshape([1, 3, 1, 4]);
    let t = task(TaskKind::Normal, 3);
    let mut acc = Accumulator::new(&t).unwrap();
    acc.update(&pred, &gt);
    let m = acc.finish(&t);
    assert_eq!(m.count, 3);
    let tol = 1e-3;
    assert!((m.get("mean_angle").unwrap() - 45.0).abs() < tol);
    assert!((m.get("median_angle").unwrap() - 45.0).abs() < tol);
    close(m.get("within_11.25").unwrap(), 100.0 / 3.0);
    close(m.get("within_30").unwrap(), 100.0 / 3.0);
    let mut acc2 = Accumulator::new(&t).unwrap();
    acc2.update(&pred.narrow(3, 0, 2), &gt.narrow(3, 0, 2));
    // Two angles 0 and 90: the median of an even count is the mean of the middle two.
    assert!((acc2.finish(&t).get("median_angle").unwrap() - 45.0).abs() < tol);
}

#[test]
fn depth_errors() {
    // gt 1, 2, 0 (invalid), 4, 2 ; pred 1.1, 1.0, 5, 4, -1 (negative predictions count as wrong).
    let gt = Tensor::from_slice(&[1f32, 2., 0., 4., 2.]).reshape([1, 1, 1, 5]);
    let pred = Tensor::from_slice(&[1.1f32, 1.0, 5.0, 4.0, -1.0]).reshape([1, 1, 1, 5]);
    let t = task(TaskKind::Depth, 1);
    let mut acc = Accumulator::new(&t).unwrap();
    acc.update(&pred, &gt);
    let m = acc.finish(&t);
    assert_eq!(m.count, 4);
    // abs: 0.1 + 1 + 0 + 3 = 4.1 over 4; rel: 0.1 + 0.5 + 0 + 1.5 = 2.1 over 4.
    close(m.get("abs_err").unwrap(), 4.1 / 4.0);
    close(m.get("rel_err").unwrap(), 2.1 / 4.0);
    // ratios 1.1, 2, 1, huge: delta1 = 2/4, delta2 (1.5625) = 2/4, delta3 (1.953) = 2/4 -> 50%.
    close(m.get("delta_1.25").unwrap(), 50.0);
    close(m.get("delta_1.25^3").unwrap(), 50.0);
}

fn tm(task: &str, metrics: &[(&str, f64, bool)]) -> TaskMetrics {
    TaskMetrics {
        task: task.into(),
        kind: TaskKind::Depth,
        count: 1,
        metrics: metrics
            .iter()
            .map(|&(n, v, h)| Metric {
                name: n.into(),
                value: Some(v),
                higher_is_better: h,
            })
            .collect(),
        warnings: Vec::new(),
    }
}

#[test]
fn delta_m_by_hand() {
    let base = vec![
        tm("seg", &[("miou", 0.5, true), ("pixel_acc", 0.8, true)]),
        tm("depth", &[("abs_err", 0.4, false)]),
    ];
    let now = vec![
        tm("seg", &[("miou", 0.45, true), ("pixel_acc", 0.8, true)]),
        tm("depth", &[("abs_err", 0.3, false)]),
    ];
    // seg: (-10% + 0%) / 2 = -5%; depth: lower is better, 0.4 -> 0.3 = +25%. Mean: +10%.
    close(delta_m(&now, &base).unwrap(), 10.0);
    close(delta_m(&base, &base).unwrap(), 0.0);
    assert!(delta_m(&now, &[tm("other", &[("x", 1.0, true)])]).is_err());
}

#[test]
fn classification_accuracy_and_regression_mae() {
    // Three samples, 3 classes: predicted 2, 0, 1 ; labels 2, 1, 1 -> 2/3.
    let pred = Tensor::from_slice(&[0f32, 0., 5., 3., 1., 0., 0., 9., 1.]).view([3, 3]);
    let t = task(TaskKind::Classification, 3);
    let mut acc = Accumulator::new(&t).unwrap();
    acc.update(&pred, &Tensor::from_slice(&[2i64, 1, 1]));
    close(acc.finish(&t).get("accuracy").unwrap(), 2.0 / 3.0);
    // A spatial head is averaged per sample: [[1, 3]] -> 2 against 2.5; [[4, 4]] -> 4 against 3.
    let pred = Tensor::from_slice(&[1f32, 3., 4., 4.]).view([2, 1, 1, 2]);
    let t = task(TaskKind::Regression, 1);
    let mut acc = Accumulator::new(&t).unwrap();
    acc.update(&pred, &Tensor::from_slice(&[2.5f32, 3.0]));
    close(acc.finish(&t).get("mae").unwrap(), 0.75);
}

/// Nothing scored is missing, never 0 (which reads as a perfect error), with a warning; labels at
/// or above the class count are counted and warned about; delta_m skips missing metrics.
#[test]
fn zero_counts_are_missing_and_out_of_range_labels_are_counted() {
    // Depth: every label invalid.
    let t = task(TaskKind::Depth, 1);
    let mut acc = Accumulator::new(&t).unwrap();
    acc.update(
        &Tensor::ones([1, 1, 2, 2], (Kind::Float, Device::Cpu)),
        &Tensor::zeros([1, 1, 2, 2], (Kind::Float, Device::Cpu)),
    );
    let m = acc.finish(&t);
    assert_eq!(m.count, 0);
    assert!(m.metrics.iter().all(|x| x.value.is_none()), "{:?}", m.metrics);
    assert_eq!(m.get("abs_err"), None);
    assert_eq!(
        m.warnings,
        ["nothing was scored (no valid labels): its metrics are missing"]
    );
    let json = serde_json::to_value(&m).unwrap();
    assert!(json["metrics"][0]["value"].is_null());
    assert_eq!(m.metrics[0].shown(), "-");

    // Segmentation, 3 classes: labels 0, 1, 7, 255, 9 -> two scored, two out of range, one ignored.
    let t = task(TaskKind::Segmentation, 3);
    let mut acc = Accumulator::new(&t).unwrap();
    let pred = Tensor::zeros([1, 3, 1, 5], (Kind::Float, Device::Cpu));
    acc.update(&pred, &Tensor::from_slice(&[0i64, 1, 7, 255, 9]).view([1, 1, 5]));
    let m = acc.finish(&t);
    assert_eq!(m.count, 2);
    assert_eq!(m.get("pixel_acc"), Some(0.5));
    assert_eq!(
        m.warnings,
        ["2 labelled pixels hold a class at or above the model's 3 (or below 0) and were not scored"]
    );
    // All out of range: missing, both warnings.
    let mut acc = Accumulator::new(&t).unwrap();
    acc.update(&pred, &Tensor::from_slice(&[5i64, 6, 7, 8, 9]).view([1, 1, 5]));
    let m = acc.finish(&t);
    assert_eq!((m.count, m.get("miou"), m.warnings.len()), (0, None, 2));

    // delta_m leaves out what is missing on either side.
    let mut now = vec![tm("depth", &[("abs_err", 0.3, false), ("rel_err", 0.1, false)])];
    now[0].metrics[1].value = None;
    let base = vec![tm("depth", &[("abs_err", 0.4, false), ("rel_err", 0.2, false)])];
    close(delta_m(&now, &base).unwrap(), 25.0);
}
