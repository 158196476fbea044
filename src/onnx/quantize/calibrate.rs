//! Activation ranges from running the f32 model on calibration inputs in ONNX Runtime, with every
//! tensor to quantize added as an output: the smallest and largest value seen (min-max), or the
//! values at a low and a high percentile of everything seen (a histogram whose range doubles as
//! larger values arrive, so that one pass suffices).

use crate::graph::onnx::proto::{type_proto, ModelProto, TypeProto, ValueInfoProto};
use crate::graph::onnx::DataType;
use crate::onnx::runtime::OrtModel;
use anyhow::Result;
use prost::Message;
use std::collections::BTreeMap;
use tch::Tensor;

/// How an activation's range is taken from what calibration saw.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    MinMax,
    /// The values at (100 - p)% and p% of all calibration values.
    Percentile(f64),
}

impl Method {
    /// `minmax`, `percentile` (99.999) or `percentile:P` with 50 < P <= 100.
    pub fn parse(text: &str) -> Result<Method, String> {
        match text.split_once(':') {
            None if text == "minmax" || text == "min-max" => Ok(Method::MinMax),
            None if text == "percentile" => Ok(Method::Percentile(99.999)),
            Some(("percentile", p)) => match p.parse::<f64>() {
                Ok(p) if p > 50.0 && p <= 100.0 => Ok(Method::Percentile(p)),
                _ => Err(format!("percentile '{p}' is not a number above 50 and at most 100")),
            },
            _ => Err(format!("'{text}' is not minmax, percentile or percentile:P")),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Method::MinMax => "min-max".into(),
            Method::Percentile(p) => format!("percentile {p}"),
        }
    }
}

const BINS: usize = 2048;

/// What calibration saw of one tensor.
#[derive(Clone, Debug)]
struct Seen {
    min: f32,
    max: f32,
    /// Counts over [-reach, reach] in `BINS` bins (percentile only).
    hist: Vec<f64>,
    reach: f32,
}

impl Seen {
    fn new(histogram: bool) -> Seen {
        Seen {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            hist: if histogram { vec![0.0; BINS] } else { Vec::new() },
            reach: 0.0,
        }
    }

    fn add(&mut self, values: &[f32]) {
        for &v in values.iter().filter(|v| v.is_finite()) {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        if self.hist.is_empty() || !self.min.is_finite() {
            return;
        }
        let need = self.min.abs().max(self.max.abs()).max(f32::MIN_POSITIVE);
        if self.reach == 0.0 {
            self.reach = need;
        }
        while self.reach < need {
            self.double_reach();
        }
        let width = 2.0 * self.reach / BINS as f32;
        for &v in values.iter().filter(|v| v.is_finite()) {
            let bin = (((v + self.reach) / width) as usize).min(BINS - 1);
            self.hist[bin] += 1.0;
        }
    }

    /// Twice the range, each new bin the sum of two old ones (the old range is the middle half).
    fn double_reach(&mut self) {
        let mut wider = vec![0.0; BINS];
        for (i, c) in self.hist.iter().enumerate() {
            wider[(i + BINS / 2) / 2] += c;
        }
        self.hist = wider;
        self.reach *= 2.0;
    }

    /// The range to quantize to, always holding 0 (zero padding must be exact).
    fn range(&self, method: Method) -> (f32, f32) {
        if !self.min.is_finite() {
            return (0.0, 0.0);
        }
        let (lo, hi) = match method {
            Method::MinMax => (self.min, self.max),
            Method::Percentile(p) => (self.quantile(1.0 - p / 100.0), self.quantile(p / 100.0)),
        };
        (lo.max(self.min).min(0.0), hi.min(self.max).max(0.0))
    }

    /// The value below which `q` of the counts lie (a bin's edge).
    fn quantile(&self, q: f64) -> f32 {
        let total: f64 = self.hist.iter().sum();
        let width = 2.0 * self.reach / BINS as f32;
        let mut below = 0.0;
        for (i, c) in self.hist.iter().enumerate() {
            below += c;
            if below >= q * total {
                // The lower quantile takes the bin's lower edge, the upper its upper edge.
                let edge = if q < 0.5 { i } else { i + 1 };
                return -self.reach + edge as f32 * width;
            }
        }
        self.reach
    }
}

/// The model with `names` added to its outputs (f32 tensors of any shape). Graph inputs are left
/// out: the caller has them, and ONNX Runtime does not return an input as an output.
fn with_outputs(model: &ModelProto, names: &[&str]) -> ModelProto {
    let mut m = model.clone();
    let graph = m.graph.as_mut().expect("checked by the caller");
    let present: std::collections::BTreeSet<String> = graph
        .output
        .iter()
        .chain(&graph.input)
        .map(|o| o.name.clone())
        .collect();
    for name in names.iter().filter(|n| !present.contains(**n)) {
        graph.output.push(ValueInfoProto {
            name: name.to_string(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: None,
                })),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    m
}

/// Each tensor's range to quantize to, by name.
pub type Ranges = BTreeMap<String, (f32, f32)>;

/// The range of each of `names` (graph inputs or node outputs) over the calibration batches.
/// Returns the ranges and the number of inputs seen.
pub fn ranges(
    model: &ModelProto,
    names: &[&str],
    batches: &mut dyn Iterator<Item = Result<BTreeMap<String, Tensor>>>,
    method: Method,
) -> Result<(Ranges, usize)> {
    let augmented = with_outputs(model, names).encode_to_vec();
    let mut ort = OrtModel::from_bytes(&augmented, 0, "int8 calibration")?;
    let histogram = matches!(method, Method::Percentile(_));
    let mut seen: BTreeMap<String, Seen> = names.iter().map(|n| (n.to_string(), Seen::new(histogram))).collect();
    let mut count = 0;
    for inputs in batches {
        let inputs = inputs?;
        count += inputs.values().next().map_or(0, |t| t.size()[0] as usize);
        // Graph inputs from the batch; everything else as ONNX Runtime holds it.
        for (name, t) in &inputs {
            if let Some(s) = seen.get_mut(name) {
                s.add(&Vec::<f32>::try_from(t.to_kind(tch::Kind::Float).flatten(0, -1))?);
            }
        }
        ort.run_with(&inputs, |name, _, values| {
            if let Some(s) = seen.get_mut(name).filter(|_| !inputs.contains_key(name)) {
                s.add(values);
            }
            Ok(())
        })?;
    }
    Ok((seen.into_iter().map(|(k, s)| (k, s.range(method))).collect(), count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_max_and_percentiles_by_hand() {
        let mut s = Seen::new(true);
        // 0..=999 in two batches; the second doubles the histogram's reach several times.
        s.add(&(0..10).map(|v| v as f32).collect::<Vec<_>>());
        s.add(&(10..1000).map(|v| v as f32).collect::<Vec<_>>());
        assert_eq!(s.range(Method::MinMax), (0.0, 999.0));
        // The 99th percentile of 0..=999 is 989; one bin is 2 * 1024 / 2048 = 1 wide.
        let (lo, hi) = s.range(Method::Percentile(99.0));
        assert_eq!(lo, 0.0);
        assert!((hi - 990.0).abs() <= 1.0, "{hi}");
        let mut neg = Seen::new(true);
        neg.add(&[-4.0, -2.0, 1.0, 3.0]);
        assert_eq!(neg.range(Method::MinMax), (-4.0, 3.0));
        // All positive: the range still holds 0.
        let mut pos = Seen::new(false);
        pos.add(&[2.0, 5.0]);
        assert_eq!(pos.range(Method::MinMax), (0.0, 5.0));
    }

    #[test]
    fn doubling_keeps_every_count() {
        let mut s = Seen::new(true);
        s.add(&[0.5, -0.5, 0.25]);
        s.add(&[100.0, -100.0]);
        assert_eq!(s.hist.iter().sum::<f64>(), 5.0);
        assert!(s.reach >= 100.0);
    }
}
