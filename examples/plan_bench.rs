//! Times `cut plan`'s algorithms on a random instance of DEVICES devices and BLOCKS blocks
//! (default 1000 x 1000): cost growing with depth for every device (the monotone case), and
//! random costs (the matching case). Prints medians of 5 runs; no assertion.
//!
//!     cargo run --release --example plan_bench [DEVICES] [BLOCKS]

use cut::plan::solve::{bottleneck, equal_bandwidth, joint};
use cut::plan::Instance;
use rand::{RngExt, SeedableRng};
use std::time::Instant;

fn instance(devices: usize, blocks: usize, monotone: bool) -> Instance {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let speed: Vec<f64> = (0..devices).map(|_| rng.random_range(0.5..4.0)).collect();
    let mut work: Vec<f64> = (0..blocks).map(|_| rng.random_range(0.1..3.0)).collect();
    work.sort_by(f64::total_cmp);
    let compute = (0..devices)
        .map(|n| {
            (0..blocks)
                .map(|b| {
                    if monotone {
                        work[b] / speed[n]
                    } else {
                        rng.random_range(0.1..3.0)
                    }
                })
                .collect()
        })
        .collect();
    let mut upload_bits: Vec<f64> = (0..blocks).map(|_| rng.random_range(1e5..1e7)).collect();
    upload_bits.sort_by(f64::total_cmp);
    Instance {
        compute,
        fits: vec![vec![true; blocks]; devices],
        upload_bits,
        efficiency: (0..devices).map(|_| rng.random_range(0.5..8.0)).collect(),
        bandwidth: 1e8,
        sets: None,
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (devices, blocks) = (
        args.first().copied().unwrap_or(1000),
        args.get(1).copied().unwrap_or(1000),
    );
    for monotone in [true, false] {
        let inst = instance(devices, blocks, monotone);
        let hz = equal_bandwidth(&inst);
        let mut times = Vec::new();
        let mut check = None;
        for _ in 0..5 {
            let t = Instant::now();
            let (a, c) = bottleneck(&inst, &hz, false).expect("feasible");
            times.push(t.elapsed().as_secs_f64());
            check = Some((c, a.latency));
        }
        println!(
            "{devices} devices x {blocks} blocks, {}: fixed-bandwidth assignment {:.3} s (median of 5; check {:?}, round {:.4} s)",
            if monotone { "monotone costs" } else { "random costs" },
            median(times),
            check.unwrap().0,
            check.unwrap().1
        );
    }
    for monotone in [true, false] {
        let inst = instance(devices, blocks, monotone);
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..3 {
            let t = Instant::now();
            let j = joint(&inst, 1e-6).expect("feasible");
            times.push(t.elapsed().as_secs_f64());
            last = Some(j);
        }
        let j = last.unwrap();
        println!(
            "{devices} devices x {blocks} blocks, {}: joint assignment and bandwidth {:.3} s (median of 3; {} matching steps, round {:.4} s, gap {:.2e})",
            if monotone { "monotone costs" } else { "random costs" },
            median(times),
            j.iterations,
            j.assignment.latency,
            (j.assignment.latency - j.lower_bound) / j.assignment.latency
        );
    }
}
