//! Fresh parameters for any graph, deterministic for a seed.

use super::interpreter::Params;
use super::{Graph, ParamRole};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Kind, Tensor};

/// Initialises every parameter of the graph the way the reference does: conv weights
/// N(0, 2 / (k*k*out_channels)) (He, fan-out), linear weights N(0, 1 / in_features), biases 0,
/// batch norm weight 1, bias 0, running mean 0, running variance 1.
///
/// Draws come from a seeded ChaCha stream, not libtorch's global generator, so concurrent callers
/// and libtorch upgrades do not change the weights.
pub fn init_params(graph: &Graph, seed: u64, device: Device) -> Params {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut normal = |shape: &[usize], std: f64| -> Tensor {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                (z * std) as f32
            })
            .collect();
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        Tensor::from_slice(&values).view(dims.as_slice())
    };
    let mut params = Params::new();
    for spec in graph.param_specs() {
        let shape: Vec<i64> = spec.shape.iter().map(|&d| d as i64).collect();
        let opts = (Kind::Float, Device::Cpu);
        let tensor = match spec.role {
            ParamRole::ConvWeight => {
                let fan_out = (spec.shape[0] * spec.shape[2] * spec.shape[3]) as f64;
                normal(&spec.shape, (2.0 / fan_out).sqrt())
            }
            ParamRole::LinearWeight => normal(&spec.shape, (1.0 / spec.shape[1] as f64).sqrt()),
            // BERT's initialiser range.
            ParamRole::Embedding | ParamRole::Tensor => normal(&spec.shape, 0.02),
            ParamRole::ConvBias
            | ParamRole::LinearBias
            | ParamRole::BnBias
            | ParamRole::BnRunningMean
            | ParamRole::NormBias
            | ParamRole::Constant => Tensor::zeros(&shape, opts),
            ParamRole::BnWeight | ParamRole::BnRunningVar | ParamRole::NormWeight => Tensor::ones(&shape, opts),
            ParamRole::BnBatchesTracked => Tensor::zeros(&shape, (Kind::Int64, Device::Cpu)),
        };
        params.insert(spec.name, tensor.to_device(device));
    }
    params
}
