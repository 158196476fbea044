//! More blocks than devices: a device fine-tunes several blocks in one backward pass (see
//! `Instance::set_cost`). This is a heuristic, not an exact method: starting from a greedy
//! placement (the costliest block first to the device whose finish time grows least, at equal
//! bandwidth) and from a few random ones, blocks move off the straggler while that shortens the
//! round, each placement with the bandwidth split that makes every busy device finish together. `tests/plan.rs` measures its distance from the exhaustive optimum on small
//! instances.

use super::solve::{blocks_of, equal_bandwidth, equalise, finish, Assignment};
use super::Instance;
use anyhow::{bail, Result};
use rand::seq::IndexedRandom;
use rand::SeedableRng;

/// Greedy placement and local search at equal bandwidth (the baseline the joint split improves).
pub fn greedy_sets(inst: &Instance) -> Result<Assignment> {
    if inst.sets.is_none() && inst.blocks() > inst.devices() {
        bail!("this instance has no costs for several blocks on one device");
    }
    let hz = equal_bandwidth(inst);
    let (nd, nb) = (inst.devices(), inst.blocks());
    let cost_alone = |b: usize| (0..nd).map(|n| inst.compute[n][b]).sum::<f64>();
    let mut order: Vec<usize> = (0..nb).collect();
    order.sort_by(|&a, &b| cost_alone(b).total_cmp(&cost_alone(a)).then(a.cmp(&b)));
    let mut device_of = vec![usize::MAX; nb];
    for b in order {
        let mut best: Option<(f64, usize)> = None;
        for (n, &share) in hz.iter().enumerate() {
            let mut set = blocks_of(&device_of, n);
            set.push(b);
            let t = finish(inst, n, &set, share);
            if t.is_finite() && best.is_none_or(|(bt, _)| t < bt) {
                best = Some((t, n));
            }
        }
        let Some((_, n)) = best else {
            bail!("block {b} fits no device's memory next to the blocks already placed");
        };
        device_of[b] = n;
    }
    // Move blocks off the straggler while the round gets shorter.
    let device_of = local_search(inst, device_of, &|_| hz.clone(), 10 * nb);
    Ok(Assignment::new(inst, device_of, hz))
}

/// Moves blocks off the straggler while the round gets shorter, each placement at the bandwidth
/// `split` gives it; at most `steps` moves.
fn local_search(
    inst: &Instance,
    mut device_of: Vec<usize>,
    split: &dyn Fn(&[usize]) -> Vec<f64>,
    steps: usize,
) -> Vec<usize> {
    let nd = inst.devices();
    let round = |d: &[usize]| Assignment::new(inst, d.to_vec(), split(d)).latency;
    let mut current = round(&device_of);
    for _ in 0..steps {
        let bw = split(&device_of);
        let time = |n: usize| finish(inst, n, &blocks_of(&device_of, n), bw[n]);
        let straggler = (0..nd).max_by(|&a, &b| time(a).total_cmp(&time(b))).expect("a device");
        let mut best: Option<(f64, usize, usize)> = None;
        for b in blocks_of(&device_of, straggler) {
            for m in (0..nd).filter(|&m| m != straggler) {
                let mut trial = device_of.clone();
                trial[b] = m;
                let t = round(&trial);
                if t < current * (1.0 - 1e-12) && best.is_none_or(|(bt, _, _)| t < bt) {
                    best = Some((t, b, m));
                }
            }
        }
        let Some((t, b, m)) = best else { break };
        device_of[b] = m;
        current = t;
    }
    device_of
}

/// The plan for several blocks per device: from the greedy placement and from random ones (the
/// `seed` one, which the random baseline uses, among them), local search at equalised bandwidth;
/// the best result with the bandwidth split that makes the busy devices finish together.
pub fn several(inst: &Instance, seed: u64) -> Result<Assignment> {
    let mut starts = vec![greedy_sets(inst)?.device_of];
    let restarts = if inst.blocks() * inst.devices() <= 10_000 { 4 } else { 1 };
    for k in 0..restarts {
        if let Ok(a) = random_sets(inst, seed.wrapping_add(k)) {
            starts.push(a.device_of);
        }
    }
    let best = starts
        .into_iter()
        .map(|s| {
            // Each move tries every block of the straggler on every other device; a cap keeps
            // large instances in seconds.
            let steps = (10 * inst.blocks()).min(200);
            local_search(inst, s, &|d| equalise(inst, d), steps)
        })
        .map(|d| Assignment::new(inst, d.clone(), equalise(inst, &d)))
        .min_by(|a, b| a.latency.total_cmp(&b.latency))
        .expect("the greedy start");
    Ok(best)
}

/// Every block to a random device that holds it with what it already has, equal bandwidth.
pub fn random_sets(inst: &Instance, seed: u64) -> Result<Assignment> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let hz = equal_bandwidth(inst);
    let mut device_of = vec![usize::MAX; inst.blocks()];
    for b in 0..inst.blocks() {
        let fits: Vec<usize> = (0..inst.devices())
            .filter(|&n| {
                let mut set = blocks_of(&device_of, n);
                set.push(b);
                inst.set_cost(n, &set).is_some()
            })
            .collect();
        let Some(&n) = fits.choose(&mut rng) else {
            bail!("random: no device holds block {b}");
        };
        device_of[b] = n;
    }
    Ok(Assignment::new(inst, device_of, hz))
}

/// The best of every assignment (devices^blocks, at most 5000), each with its equalised bandwidth.
pub fn exhaustive_sets(inst: &Instance) -> Result<Assignment> {
    let (nd, nb) = (inst.devices(), inst.blocks());
    let total = (nd as f64).powi(nb as i32);
    if total > 5000.0 {
        bail!("exhaustive search over {total} assignments is too large");
    }
    let mut best: Option<Assignment> = None;
    let mut device_of = vec![0usize; nb];
    loop {
        let a = Assignment::new(inst, device_of.clone(), equalise(inst, &device_of));
        if a.latency.is_finite() && best.as_ref().is_none_or(|b| a.latency < b.latency) {
            best = Some(a);
        }
        // Next assignment, counting in base `nd`.
        let mut i = 0;
        while i < nb {
            device_of[i] += 1;
            if device_of[i] < nd {
                break;
            }
            device_of[i] = 0;
            i += 1;
        }
        if i == nb {
            break;
        }
    }
    best.ok_or_else(|| anyhow::anyhow!("no assignment fits"))
}
