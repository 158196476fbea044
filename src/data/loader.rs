//! Batches built on a background thread, so that decoding overlaps compute.

use super::example::{Example, Examples};
use anyhow::Result;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use tch::Device;

pub use super::example::Batch;

/// Loads a batch's examples on up to one thread per core, in order, so that large images (PNG
/// decoding is the slow part) keep up with a GPU.
fn load_parallel(source: &dyn Examples, indices: &[usize]) -> Result<Vec<Example>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(indices.len())
        .max(1);
    if threads == 1 {
        return indices.iter().map(|&i| source.load(i)).collect();
    }
    let per = indices.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = indices
            .chunks(per)
            .map(|chunk| scope.spawn(move || chunk.iter().map(|&i| source.load(i)).collect::<Result<Vec<_>>>()))
            .collect();
        let mut out = Vec::with_capacity(indices.len());
        for h in handles {
            out.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a data loading thread panicked"))??,
            );
        }
        Ok(out)
    })
}

/// Yields batches decoded ahead on a background thread.
pub struct Loader {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
}

impl Loader {
    fn spawn(source: Arc<dyn Examples>, batch: usize, shuffle_seed: Option<u64>, bound_for: Device) -> Loader {
        let (tx, rx) = sync_channel::<Result<Batch>>(2);
        let handle = std::thread::spawn(move || {
            let mut rng = shuffle_seed.map(ChaCha8Rng::seed_from_u64);
            loop {
                let count = source.count();
                let mut order: Vec<usize> = (0..count).collect();
                if let Some(rng) = rng.as_mut() {
                    order.shuffle(rng);
                }
                // An endless (shuffled) stream uses full batches only, so every step sees `batch` samples.
                let chunks: Vec<&[usize]> = order
                    .chunks(batch)
                    .filter(|c| rng.is_none() || c.len() == batch || count < batch)
                    .collect();
                for chunk in chunks {
                    let result = load_parallel(source.as_ref(), chunk)
                        .and_then(|e| Batch::stack(e, source.as_ref(), chunk))
                        .and_then(|b| source.complete(b))
                        .map(|b| if bound_for.is_cuda() { b.pinned(bound_for) } else { b });
                    let failed = result.is_err();
                    if tx.send(result).is_err() || failed {
                        return;
                    }
                }
                if rng.is_none() {
                    return;
                }
            }
        });
        Loader {
            rx: Some(rx),
            handle: Some(handle),
        }
    }

    /// One pass over any examples in order; the last batch may be smaller. Batches `bound_for` a
    /// GPU are built in pinned memory, so that their copy overlaps the work queued before it.
    pub fn sequential(source: Arc<dyn Examples>, batch: usize, bound_for: Device) -> Loader {
        Loader::spawn(source, batch.max(1), None, bound_for)
    }

    /// An endless stream, reshuffled every epoch from `seed`; `bound_for` as in
    /// [`Loader::sequential`].
    pub fn shuffled(source: Arc<dyn Examples>, batch: usize, seed: u64, bound_for: Device) -> Loader {
        Loader::spawn(source, batch.max(1), Some(seed), bound_for)
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel makes the worker's next send fail, so it stops.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
