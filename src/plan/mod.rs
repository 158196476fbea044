//! `cut plan`: which edge device fine-tunes which parameter block of a model, and how the devices
//! share the uplink, so that a round of cooperative fine-tuning ends as early as possible. A
//! reconstruction of LoLa-DEFT (Wu, Chen, Huang, arXiv 2407.09873) from its abstract; the cost
//! model and the algorithms are stated in docs/plan.md.
//!
//! Cost model, per sample, for fine-tuning block b (backbone blocks in order from the input, heads
//! at the output): the forward pass of the whole model, the backward pass from every task's loss
//! down to b (activation gradients through everything after b), and b's weight gradients:
//! FLOPs = 2 (MACs of the model + MACs of the blocks after b + MACs of b). Memory: the model's f32
//! weights, the activations of b and of every block after it (times the batch), and b's gradient
//! and Adam moments (3 x 4 bytes per parameter). Upload: b's update in f32 (32 bits per
//! parameter). A device n with speed s_n (FLOP/s), spectral efficiency e_n (bit/s/Hz) and
//! bandwidth B_n (Hz) finishes after K_n FLOPs(b) / s_n + bits(b) / (B_n e_n); the round lasts
//! as long as the slowest device.

pub mod blocks;
pub mod devices;
pub mod measure;
pub mod report;
pub mod several;
pub mod solve;

use anyhow::{bail, Result};
use blocks::Block;
use devices::Device;
use serde::Serialize;

/// What fine-tuning one block costs, whoever does it.
#[derive(Clone, Debug, Serialize)]
pub struct BlockCost {
    pub block: String,
    pub params: u64,
    /// Forward MACs of the block per sample.
    pub macs: u64,
    /// FLOPs of one fine-tuning sample (forward and backward down to the block).
    pub flops_per_sample: f64,
    /// Bytes a device needs to fine-tune it at the plan's batch.
    pub memory_bytes: u64,
    /// What the device uploads: the block's update in f32.
    pub upload_bits: f64,
}

/// The cost of each block, from the blocks in order (backbone from the input, then heads).
pub fn block_costs(blocks: &[Block], batch: usize) -> Vec<BlockCost> {
    let total_macs: u64 = blocks.iter().map(|b| b.macs).sum();
    let total_params: u64 = blocks.iter().map(|b| b.params).sum();
    let heads_macs: u64 = blocks.iter().filter(|b| b.head.is_some()).map(|b| b.macs).sum();
    let heads_act: u64 = blocks
        .iter()
        .filter(|b| b.head.is_some())
        .map(|b| b.activation_bytes)
        .sum();
    let backbone: Vec<&Block> = blocks.iter().filter(|b| b.head.is_none()).collect();
    blocks
        .iter()
        .map(|b| {
            // Blocks backward passes through after this one, and the activations it keeps.
            let (after_macs, kept_act) = match &b.head {
                Some(_) => (0, b.activation_bytes),
                None => {
                    let i = backbone
                        .iter()
                        .position(|x| std::ptr::eq(*x, b))
                        .expect("a backbone block");
                    let later = &backbone[i + 1..];
                    (
                        later.iter().map(|x| x.macs).sum::<u64>() + heads_macs,
                        backbone[i..].iter().map(|x| x.activation_bytes).sum::<u64>() + heads_act,
                    )
                }
            };
            BlockCost {
                block: b.name.clone(),
                params: b.params,
                macs: b.macs,
                flops_per_sample: 2.0 * (total_macs + after_macs + b.macs) as f64,
                memory_bytes: 4 * total_params + batch as u64 * kept_act + 12 * b.params,
                upload_bits: 32.0 * b.params as f64,
            }
        })
        .collect()
}

/// A planning problem in numbers: seconds of compute and bits to upload per device and block.
#[derive(Clone, Debug, Serialize)]
pub struct Instance {
    /// compute[n][b]: seconds device n computes to fine-tune block b for a round.
    pub compute: Vec<Vec<f64>>,
    /// fits[n][b]: whether block b fits device n's memory.
    pub fits: Vec<Vec<bool>>,
    /// Bits each block's update takes.
    pub upload_bits: Vec<f64>,
    /// Per device, bit/s per Hz of bandwidth.
    pub efficiency: Vec<f64>,
    /// Total uplink bandwidth, Hz.
    pub bandwidth: f64,
    /// What a device taking several blocks costs (built from a model; None in hand-made instances).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sets: Option<SetCosts>,
}

/// The parts of the cost model that a set of blocks on one device needs: backward reaches the
/// deepest block of the set (the one that costs most alone) and computes the others' weight
/// gradients on the way; memory holds the deepest block's activations and every block's optimiser
/// state; the upload is the sum.
#[derive(Clone, Debug, Serialize)]
pub struct SetCosts {
    /// Per device: seconds per FLOP for its round (samples / speed).
    pub seconds_per_flop: Vec<f64>,
    /// Per block: FLOPs of its weight gradients per sample (2 x its MACs).
    pub weight_grad_flops: Vec<f64>,
    /// Per block: bytes alone (`BlockCost::memory_bytes`) and its optimiser state (12 per parameter).
    pub memory_alone: Vec<u64>,
    pub optimiser_bytes: Vec<u64>,
    /// Per device: its memory.
    pub device_memory: Vec<u64>,
}

impl Instance {
    pub fn new(costs: &[BlockCost], devices: &[Device], bandwidth: f64) -> Result<Instance> {
        if !(bandwidth > 0.0 && bandwidth.is_finite()) {
            crate::usage_bail!("--bandwidth {bandwidth} must be a positive number of Hz");
        }
        let compute: Vec<Vec<f64>> = devices
            .iter()
            .map(|d| {
                costs
                    .iter()
                    .map(|c| d.samples as f64 * c.flops_per_sample / d.flops)
                    .collect()
            })
            .collect();
        // Checked here so that no time downstream is NaN or infinite by arithmetic.
        for (d, row) in devices.iter().zip(&compute) {
            if let Some(b) = row.iter().position(|s| !(s.is_finite() && *s >= 0.0)) {
                bail!(
                    "device '{}': compute time for block {b} is {} s (its flops {:e}, samples {})",
                    d.name,
                    row[b],
                    d.flops,
                    d.samples
                );
            }
        }
        let fits = devices
            .iter()
            .map(|d| costs.iter().map(|c| c.memory_bytes <= d.memory).collect())
            .collect();
        Ok(Instance {
            compute,
            fits,
            upload_bits: costs.iter().map(|c| c.upload_bits).collect(),
            efficiency: devices.iter().map(|d| d.efficiency).collect(),
            bandwidth,
            sets: Some(SetCosts {
                seconds_per_flop: devices.iter().map(|d| d.samples as f64 / d.flops).collect(),
                weight_grad_flops: costs.iter().map(|c| 2.0 * c.macs as f64).collect(),
                memory_alone: costs.iter().map(|c| c.memory_bytes).collect(),
                optimiser_bytes: costs.iter().map(|c| 12 * c.params).collect(),
                device_memory: devices.iter().map(|d| d.memory).collect(),
            }),
        })
    }

    pub fn devices(&self) -> usize {
        self.compute.len()
    }
    pub fn blocks(&self) -> usize {
        self.upload_bits.len()
    }

    /// Seconds of compute and bits of upload for device n fine-tuning the blocks `set` (None when
    /// they do not fit its memory, or the instance has no set costs and the set is not one block).
    pub fn set_cost(&self, n: usize, set: &[usize]) -> Option<(f64, f64)> {
        let bits: f64 = set.iter().map(|&b| self.upload_bits[b]).sum();
        if let [b] = set {
            return self.fits[n][*b].then_some((self.compute[n][*b], bits));
        }
        if set.is_empty() {
            return Some((0.0, 0.0));
        }
        let sc = self.sets.as_ref()?;
        let deepest = *set
            .iter()
            .max_by(|&&a, &&b| self.compute[n][a].total_cmp(&self.compute[n][b]))?;
        let others = set.iter().filter(|&&b| b != deepest);
        let memory = sc.memory_alone[deepest] + others.clone().map(|&b| sc.optimiser_bytes[b]).sum::<u64>();
        if memory > sc.device_memory[n] {
            return None;
        }
        let compute =
            self.compute[n][deepest] + sc.seconds_per_flop[n] * others.map(|&b| sc.weight_grad_flops[b]).sum::<f64>();
        Some((compute, bits))
    }

    /// Seconds device n takes for block b with `hz` of bandwidth (infinite when it does not fit).
    pub fn time(&self, n: usize, b: usize, hz: f64) -> f64 {
        if !self.fits[n][b] {
            return f64::INFINITY;
        }
        self.compute[n][b] + self.upload_bits[b] / (hz * self.efficiency[n])
    }
}
