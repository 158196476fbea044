//! The plan's algorithms. Each block goes to a distinct device; the round lasts as long as the
//! slowest device.
//!
//! 1. [`bottleneck`]: at fixed bandwidths, the assignment with the smallest round time. A binary
//!    search over the candidate times T checks whether every block can go to a device finishing by
//!    T. When every device ranks the blocks in the same order (cost grows with depth for all of
//!    them: CRUNCH's monotone structure), a device's feasible blocks are a prefix of that order, and
//!    the check is Hall's condition counted in depth order, O(devices + blocks); otherwise it is a
//!    maximum matching (Hopcroft-Karp).
//! 2. [`joint`]: assignment and bandwidth together. For a round time T, the least bandwidth pair
//!    (n, b) needs is bits_b / (e_n (T - compute_nb)) (closed form); T is feasible when a matching's
//!    total need fits the uplink. The search alternates a min-cost matching on those needs
//!    ([`Matcher`], warm-started) with the bandwidth split that equalises the matched devices'
//!    finish times, until the matching needs the whole uplink (optimal; see [`joint`]).

use super::Instance;
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

/// Which device fine-tunes each block, with what bandwidth, and the round time.
#[derive(Clone, Debug, Serialize)]
pub struct Assignment {
    /// device_of[b]: the device fine-tuning block b.
    pub device_of: Vec<usize>,
    /// Hz per device (0 for a device without a block).
    pub bandwidth: Vec<f64>,
    /// Seconds until the slowest device is done.
    pub latency: f64,
}

impl Assignment {
    pub fn new(inst: &Instance, device_of: Vec<usize>, mut bandwidth: Vec<f64>) -> Assignment {
        for (n, hz) in bandwidth.iter_mut().enumerate() {
            if !device_of.contains(&n) {
                *hz = 0.0;
            }
        }
        let latency = (0..inst.devices())
            .map(|n| finish(inst, n, &blocks_of(&device_of, n), bandwidth[n]))
            .fold(0.0, f64::max);
        Assignment {
            device_of,
            bandwidth,
            latency,
        }
    }
}

/// The blocks `device_of` gives device n.
pub fn blocks_of(device_of: &[usize], n: usize) -> Vec<usize> {
    device_of
        .iter()
        .enumerate()
        .filter(|(_, &d)| d == n)
        .map(|(b, _)| b)
        .collect()
}

/// Seconds until device n is done with `set` at `hz` (0 for no blocks; infinite when the set does
/// not fit).
pub fn finish(inst: &Instance, n: usize, set: &[usize], hz: f64) -> f64 {
    match inst.set_cost(n, set) {
        None => f64::INFINITY,
        Some((_, 0.0)) => 0.0,
        Some((compute, bits)) => compute + bits / (hz * inst.efficiency[n]),
    }
}

fn check_sizes(inst: &Instance) -> Result<()> {
    if inst.blocks() > inst.devices() {
        crate::usage_bail!(
            "{} blocks for {} devices: each device fine-tunes one block here; merge blocks with --blocks N (N <= {})",
            inst.blocks(),
            inst.devices(),
            inst.devices()
        );
    }
    for b in 0..inst.blocks() {
        if (0..inst.devices()).all(|n| !inst.fits[n][b]) {
            bail!("block {b} fits no device's memory");
        }
    }
    Ok(())
}

/// Equal shares of the uplink among the devices that fine-tune: every block has its own device
/// when blocks are no more than devices (idle devices send nothing, so they take no share), else
/// every device has blocks. Each device is offered the share; [`Assignment::new`] zeroes the idle.
pub fn equal_bandwidth(inst: &Instance) -> Vec<f64> {
    let active = inst.devices().min(inst.blocks()).max(1);
    vec![inst.bandwidth / active as f64; inst.devices()]
}

/// Maximum matching of blocks to devices over `allowed` (Hopcroft-Karp); true when every block is
/// matched, with `device_of` filled.
fn matches_all(
    blocks: usize,
    devices: usize,
    allowed: &dyn Fn(usize, usize) -> bool,
    device_of: &mut Vec<usize>,
) -> bool {
    const NONE: usize = usize::MAX;
    let adj: Vec<Vec<usize>> = (0..blocks)
        .map(|b| (0..devices).filter(|&n| allowed(n, b)).collect())
        .collect();
    let (mut match_b, mut match_n) = (vec![NONE; blocks], vec![NONE; devices]);
    let mut dist = vec![0usize; blocks];
    loop {
        // Layers from the free blocks.
        let mut queue: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
        let mut found = false;
        for b in 0..blocks {
            if match_b[b] == NONE {
                dist[b] = 0;
                queue.push_back(b);
            } else {
                dist[b] = usize::MAX;
            }
        }
        while let Some(b) = queue.pop_front() {
            for &n in &adj[b] {
                match match_n[n] {
                    NONE => found = true,
                    b2 if dist[b2] == usize::MAX => {
                        dist[b2] = dist[b] + 1;
                        queue.push_back(b2);
                    }
                    _ => {}
                }
            }
        }
        if !found {
            break;
        }
        fn augment(
            b: usize,
            adj: &[Vec<usize>],
            match_b: &mut [usize],
            match_n: &mut [usize],
            dist: &mut [usize],
        ) -> bool {
            for &n in &adj[b] {
                let next = match_n[n];
                if next == usize::MAX || (dist[next] == dist[b] + 1 && augment(next, adj, match_b, match_n, dist)) {
                    match_b[b] = n;
                    match_n[n] = b;
                    return true;
                }
            }
            dist[b] = usize::MAX;
            false
        }
        for b in 0..blocks {
            if match_b[b] == NONE {
                augment(b, &adj, &mut match_b, &mut match_n, &mut dist);
            }
        }
    }
    *device_of = match_b.clone();
    match_b.iter().all(|&n| n != NONE)
}

/// The common order of the blocks when every device's times grow along it (ties allowed).
fn monotone_order(times: &[Vec<f64>]) -> Option<Vec<usize>> {
    let blocks = times.first()?.len();
    let mut order: Vec<usize> = (0..blocks).collect();
    // Sort by the sum of ranks-free key: the first device's time, then the others' as tie-breaks.
    order.sort_by(|&a, &b| {
        times
            .iter()
            .map(|row| row[a].total_cmp(&row[b]))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let ok = times.iter().all(|row| order.windows(2).all(|w| row[w[0]] <= row[w[1]]));
    ok.then_some(order)
}

/// Hall's condition on prefix-nested feasible sets: `reach[n]` = how many blocks (in `order`) device
/// n can take by the threshold. Fills `device_of` when feasible.
fn hall_in_order(order: &[usize], reach: &[usize], device_of: &mut [usize]) -> bool {
    let blocks = order.len();
    // Devices by reach, strongest last; the hardest block takes the weakest device able to.
    let mut devices: Vec<usize> = (0..reach.len()).collect();
    devices.sort_by_key(|&n| reach[n]);
    // With nested sets the greedy below succeeds exactly when, for every k, at least
    // blocks - k devices reach past position k (Hall's condition counted in depth order).
    let mut next = devices.len();
    let mut pool: Vec<usize> = Vec::new();
    for pos in (0..blocks).rev() {
        while next > 0 && reach[devices[next - 1]] > pos {
            next -= 1;
            pool.push(devices[next]);
        }
        // The pool holds every device reaching pos, weakest last pushed; take the weakest.
        match pool.pop() {
            Some(n) => device_of[order[pos]] = n,
            None => return false,
        }
    }
    true
}

/// How [`bottleneck`] decided feasibility.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// Hall's condition in the common depth order.
    MonotoneHall,
    /// Hopcroft-Karp matching.
    Matching,
}

/// The assignment with the smallest round time at bandwidths `hz` (per device), and how it was
/// checked. `force_matching` skips the monotone path (for tests).
pub fn bottleneck(inst: &Instance, hz: &[f64], force_matching: bool) -> Result<(Assignment, Check)> {
    check_sizes(inst)?;
    let (nd, nb) = (inst.devices(), inst.blocks());
    let times: Vec<Vec<f64>> = (0..nd)
        .map(|n| (0..nb).map(|b| inst.time(n, b, hz[n])).collect())
        .collect();
    let mut candidates: Vec<f64> = times.iter().flatten().copied().filter(|t| t.is_finite()).collect();
    candidates.sort_by(f64::total_cmp);
    candidates.dedup();
    let order = if force_matching { None } else { monotone_order(&times) };
    let mut device_of = vec![usize::MAX; nb];
    let feasible = |t: f64, out: &mut Vec<usize>| -> bool {
        match &order {
            Some(order) => {
                let reach: Vec<usize> = times
                    .iter()
                    .map(|row| order.iter().take_while(|&&b| row[b] <= t).count())
                    .collect();
                hall_in_order(order, &reach, out)
            }
            None => matches_all(nb, nd, &|n, b| times[n][b] <= t, out),
        }
    };
    let (mut lo, mut hi) = (0usize, candidates.len());
    // Smallest candidate index that is feasible.
    while lo < hi {
        let mid = (lo + hi) / 2;
        if feasible(candidates[mid], &mut device_of) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    if lo == candidates.len() {
        bail!("no assignment gives every block its own device with the memory to fine-tune it");
    }
    feasible(candidates[lo], &mut device_of);
    let mut bandwidth = hz.to_vec();
    // Devices without a block send nothing.
    for (n, bw) in bandwidth.iter_mut().enumerate() {
        if !device_of.contains(&n) {
            *bw = 0.0;
        }
    }
    let check = if order.is_some() {
        Check::MonotoneHall
    } else {
        Check::Matching
    };
    Ok((Assignment::new(inst, device_of, bandwidth), check))
}

/// The least bandwidth device n needs to finish block b by `t` (infinite when it cannot).
fn need(inst: &Instance, n: usize, b: usize, t: f64) -> f64 {
    if !inst.fits[n][b] || t <= inst.compute[n][b] {
        return f64::INFINITY;
    }
    inst.upload_bits[b] / (inst.efficiency[n] * (t - inst.compute[n][b]))
}

/// Min-cost assignment of every row to a distinct column (rows <= columns; shortest augmenting
/// paths, O(columns^3) at worst). Infinite costs are forbidden pairs; returns (cost, column of each row).
pub fn hungarian(cost: &[Vec<f64>]) -> Option<(f64, Vec<usize>)> {
    let cols = cost.first().map_or(0, Vec::len);
    Matcher::default().solve(&cost.concat(), cost.len(), cols)
}

/// Shortest-augmenting-path assignment (Jonker-Volgenant / Crouse's form, one scan of the
/// unreached columns per step) that keeps its column prices between solves. Any column prices,
/// with row prices set to each row's least reduced cost, are dual feasible, so a later solve starts
/// from the previous prices and keeps each assignment that is still tight; when the costs change
/// little (as between [`joint`]'s steps) the augmenting paths are short.
#[derive(Default)]
pub struct Matcher {
    /// Column prices.
    v: Vec<f64>,
    /// Row held by each column (usize::MAX: free).
    row_of: Vec<usize>,
}

const FREE: usize = usize::MAX;

impl Matcher {
    /// Min-cost assignment of every row to a distinct column (rows <= columns; infinite costs are
    /// forbidden pairs); (cost, column of each row), or None when every assignment is forbidden.
    pub fn solve(&mut self, cost: &[f64], rows: usize, cols: usize) -> Option<(f64, Vec<usize>)> {
        if rows == 0 {
            return Some((0.0, Vec::new()));
        }
        let n = cols;
        // Large but finite stand-in for forbidden pairs keeps the prices finite; rows past `rows`
        // are dummies (cost 0) that square the problem, so prices need no sign constraint.
        let big = cost
            .iter()
            .filter(|c| c.is_finite())
            .fold(0.0f64, |a, &c| a.max(c.abs()))
            * 4.0
            * n as f64
            + 1.0;
        let mut a: Vec<f64> = cost.iter().map(|&c| if c.is_finite() { c } else { big }).collect();
        a.resize(n * n, 0.0);
        let row = |i: usize| &a[i * n..(i + 1) * n];
        if self.v.len() != n {
            // A first solve starts from column reduction: each column priced at its cheapest row.
            self.v = (0..n)
                .map(|j| (0..n).map(|i| a[i * n + j]).fold(f64::INFINITY, f64::min))
                .collect();
            self.row_of = vec![FREE; n];
        }
        let (v, row_of) = (&mut self.v, &mut self.row_of);
        let least = |i: usize, v: &[f64]| {
            row(i)
                .iter()
                .zip(v.iter())
                .fold(f64::INFINITY, |m, (c, p)| m.min(c - p))
        };
        // Row prices from the kept column prices; assignments no longer tight are dropped.
        let mut col_of = vec![FREE; n];
        let mut u = vec![0.0; n];
        for j in 0..n {
            if row_of[j] != FREE {
                col_of[row_of[j]] = j;
            }
        }
        for i in 0..n {
            u[i] = least(i, v);
            let j = col_of[i];
            if j != FREE && row(i)[j] - v[j] - u[i] > 1e-13 * (row(i)[j].abs() + v[j].abs()) {
                row_of[j] = FREE;
                col_of[i] = FREE;
            }
        }
        let mut shortest = vec![f64::INFINITY; n];
        let mut path = vec![0usize; n];
        let mut reached_rows = Vec::with_capacity(n);
        let mut reached_cols = Vec::with_capacity(n);
        let mut remaining: Vec<usize> = Vec::with_capacity(n);
        for start in 0..n {
            if col_of[start] != FREE {
                continue;
            }
            shortest.fill(f64::INFINITY);
            remaining.clear();
            remaining.extend(0..n);
            reached_rows.clear();
            reached_cols.clear();
            let (mut i, mut min_val) = (start, 0.0);
            let sink = loop {
                reached_rows.push(i);
                let (ri, ui) = (row(i), u[i]);
                let (mut lowest, mut pick) = (f64::INFINITY, 0);
                for (k, &j) in remaining.iter().enumerate() {
                    let r = min_val + ri[j] - ui - v[j];
                    if r < shortest[j] {
                        path[j] = i;
                        shortest[j] = r;
                    }
                    // Ties go to a free column: the path ends sooner.
                    if shortest[j] < lowest || (shortest[j] == lowest && row_of[j] == FREE) {
                        lowest = shortest[j];
                        pick = k;
                    }
                }
                min_val = lowest;
                let j = remaining.swap_remove(pick);
                reached_cols.push(j);
                if row_of[j] == FREE {
                    break j;
                }
                i = row_of[j];
            };
            u[start] += min_val;
            for &i in &reached_rows[1..] {
                u[i] += min_val - shortest[col_of[i]];
            }
            for &j in &reached_cols {
                v[j] -= min_val - shortest[j];
            }
            let mut j = sink;
            loop {
                let i = path[j];
                row_of[j] = i;
                let previous = std::mem::replace(&mut col_of[i], j);
                if i == start {
                    break;
                }
                j = previous;
            }
        }
        let picked = col_of[..rows].to_vec();
        let total = picked.iter().enumerate().map(|(i, &j)| cost[i * cols + j]).sum::<f64>();
        total.is_finite().then_some((total, picked))
    }
}

/// What [`joint`] found and how close it is.
#[derive(Clone, Debug, Serialize)]
pub struct Joint {
    pub assignment: Assignment,
    /// The largest round time found infeasible: the optimum lies in (lower_bound, latency].
    pub lower_bound: f64,
    pub iterations: usize,
}

/// Assignment and bandwidth together (see the module comment), to a relative gap of `tolerance`.
///
/// Alternates the two halves of the problem: at the current round time T, the min-cost matching
/// on each pair's closed-form bandwidth need; then the bandwidth split that equalises that
/// matching's finish times, which gives a shorter T whenever the matching needed less than the
/// uplink. Each step is feasible, so T only falls, and there are finitely many matchings. The
/// bound: a matching needing C at T needs at least C T / T' at T' < T (compute is not negative),
/// so nothing finishes before T C_min(T) / B; the loop stops when that meets T.
pub fn joint(inst: &Instance, tolerance: f64) -> Result<Joint> {
    check_sizes(inst)?;
    let (nd, nb) = (inst.devices(), inst.blocks());
    let start = bottleneck(inst, &equal_bandwidth(inst), false)?.0;
    // Below the fastest possible compute nothing is feasible.
    let mut lower_bound = (0..nb)
        .map(|b| {
            (0..nd)
                .filter(|&n| inst.fits[n][b])
                .map(|n| inst.compute[n][b])
                .fold(f64::INFINITY, f64::min)
        })
        .fold(0.0, f64::max);
    let mut best = Assignment::new(inst, start.device_of.clone(), equalise(inst, &start.device_of));
    if start.latency < best.latency {
        best = start;
    }
    let mut cost = vec![f64::INFINITY; nb * nd];
    let mut matcher = Matcher::default();
    let mut iterations = 0;
    while best.latency - lower_bound > tolerance * best.latency && iterations < 1000 {
        iterations += 1;
        let t = best.latency;
        for b in 0..nb {
            for n in 0..nd {
                cost[b * nd + n] = need(inst, n, b, t);
            }
        }
        let Some((needed, device_of)) = matcher.solve(&cost, nb, nd) else {
            break; // unreachable: the current assignment is finite at t
        };
        lower_bound = lower_bound.max(t * needed / inst.bandwidth);
        let next = Assignment::new(inst, device_of.clone(), equalise(inst, &device_of));
        if next.latency >= t {
            break; // the matching at t is the current one: t is optimal up to rounding
        }
        best = next;
    }
    Ok(Joint {
        lower_bound: lower_bound.min(best.latency),
        assignment: best,
        iterations,
    })
}

/// For a fixed assignment, the bandwidth split that makes every device finish at the same time
/// (the closed form bits / (e (T - compute)), with T found by bisection so the shares sum to the
/// uplink). Devices without a block get none.
pub fn equalise(inst: &Instance, device_of: &[usize]) -> Vec<f64> {
    // Per busy device: its compute seconds and its bits.
    let parts: Vec<(usize, f64, f64)> = (0..inst.devices())
        .filter_map(|n| {
            let set = blocks_of(device_of, n);
            let (compute, bits) = inst.set_cost(n, &set)?;
            (bits > 0.0).then_some((n, compute, bits))
        })
        .collect();
    let need_of = |&(n, c, bits): &(usize, f64, f64), t: f64| {
        if t <= c {
            f64::INFINITY
        } else {
            bits / (inst.efficiency[n] * (t - c))
        }
    };
    let total = |t: f64| parts.iter().map(|p| need_of(p, t)).sum::<f64>();
    let mut lo = parts.iter().map(|p| p.1).fold(0.0, f64::max);
    let mut hi = lo.max(1e-9) * 2.0;
    while total(hi) > inst.bandwidth {
        hi *= 2.0;
        if !hi.is_finite() {
            break;
        }
    }
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if total(mid) > inst.bandwidth {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let mut bw = vec![0.0; inst.devices()];
    for p in &parts {
        bw[p.0] = need_of(p, hi);
    }
    // What rounding leaves over goes to the devices in proportion, which only helps.
    let used: f64 = bw.iter().sum();
    if used > 0.0 && used < inst.bandwidth {
        bw.iter_mut().for_each(|x| *x *= inst.bandwidth / used);
    }
    bw
}

/// Random assignment among devices that can hold each block, equal bandwidth.
pub fn random(inst: &Instance, seed: u64) -> Result<Assignment> {
    check_sizes(inst)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let hz = equal_bandwidth(inst);
    for _ in 0..1000 {
        let mut devices: Vec<usize> = (0..inst.devices()).collect();
        devices.shuffle(&mut rng);
        let device_of: Vec<usize> = devices[..inst.blocks()].to_vec();
        if device_of.iter().enumerate().all(|(b, &n)| inst.fits[n][b]) {
            return Ok(Assignment::new(inst, device_of, hz));
        }
    }
    bail!("no random assignment that fits memory was found in 1000 draws")
}

/// The costliest block to the fastest device (by compute time on the first block), equal bandwidth;
/// a device that cannot hold a block passes it on to the next.
pub fn greedy_by_speed(inst: &Instance) -> Result<Assignment> {
    check_sizes(inst)?;
    let mut devices: Vec<usize> = (0..inst.devices()).collect();
    devices.sort_by(|&a, &b| inst.compute[a][0].total_cmp(&inst.compute[b][0]));
    let mut blocks: Vec<usize> = (0..inst.blocks()).collect();
    blocks.sort_by(|&a, &b| inst.compute[devices[0]][b].total_cmp(&inst.compute[devices[0]][a]));
    let mut device_of = vec![usize::MAX; inst.blocks()];
    let mut free = devices;
    for b in blocks {
        let Some(k) = free.iter().position(|&n| inst.fits[n][b]) else {
            bail!("greedy: no free device holds block {b}");
        };
        device_of[b] = free.remove(k);
    }
    Ok(Assignment::new(inst, device_of, equal_bandwidth(inst)))
}

/// Every injective assignment (at most 8 devices): the best at equal bandwidth, and the best with
/// each assignment's equalised bandwidth.
pub fn exhaustive(inst: &Instance) -> Result<(Assignment, Assignment)> {
    check_sizes(inst)?;
    if inst.devices() > 8 {
        bail!("exhaustive search is limited to 8 devices");
    }
    let hz = equal_bandwidth(inst);
    let mut best_equal: Option<Assignment> = None;
    let mut best_joint: Option<Assignment> = None;
    let mut current = Vec::new();
    let mut used = vec![false; inst.devices()];
    fn walk(
        inst: &Instance,
        hz: &[f64],
        current: &mut Vec<usize>,
        used: &mut [bool],
        best_equal: &mut Option<Assignment>,
        best_joint: &mut Option<Assignment>,
    ) {
        let b = current.len();
        if b == inst.blocks() {
            let equal = Assignment::new(inst, current.clone(), hz.to_vec());
            if best_equal.as_ref().is_none_or(|a| equal.latency < a.latency) {
                *best_equal = Some(equal);
            }
            let joint = Assignment::new(inst, current.clone(), equalise(inst, current));
            if best_joint.as_ref().is_none_or(|a| joint.latency < a.latency) {
                *best_joint = Some(joint);
            }
            return;
        }
        for n in 0..inst.devices() {
            if !used[n] && inst.fits[n][b] {
                used[n] = true;
                current.push(n);
                walk(inst, hz, current, used, best_equal, best_joint);
                current.pop();
                used[n] = false;
            }
        }
    }
    walk(inst, &hz, &mut current, &mut used, &mut best_equal, &mut best_joint);
    match (best_equal, best_joint) {
        (Some(e), Some(j)) => Ok((e, j)),
        _ => bail!("no assignment fits every block"),
    }
}
