//! Batches built on a background thread, so that decoding overlaps compute.

use super::layout::{Item, Sample};
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;
use tch::{Device, Tensor};

/// A batch on the host; `to_device` moves it.
pub struct Batch {
    /// [N, 3, H, W] BGR minus mean.
    pub image: Tensor,
    /// [N, H, W] int64, 255 = ignore.
    pub seg: Tensor,
    /// [N, 3, H, W], zero vectors invalid.
    pub normal: Tensor,
    /// [N, 1, H, W] metres.
    pub depth: Tensor,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.image.size()[0] as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies the batch to `device`. From pinned host memory (see [`Loader`]) the copies to a GPU run
    /// asynchronously, behind the work already queued; from pageable memory CUDA waits for them.
    pub fn to_device(&self, device: Device) -> Batch {
        let move_to = |t: &Tensor| t.to_device_(device, t.kind(), true, false);
        Batch {
            image: move_to(&self.image),
            seg: move_to(&self.seg),
            normal: move_to(&self.normal),
            depth: move_to(&self.depth),
        }
    }

    /// The batch in page-locked host memory, from which a GPU copies without blocking the host.
    /// (`_pin_memory` is what `pin_memory` calls; through tch the latter always names a device,
    /// which libtorch warns about on every call.)
    fn pinned(self, device: Device) -> Batch {
        let pin = |t: Tensor| t.internal_pin_memory(device);
        Batch {
            image: pin(self.image),
            seg: pin(self.seg),
            normal: pin(self.normal),
            depth: pin(self.depth),
        }
    }

    fn stack(samples: Vec<Sample>, items: &[&Item]) -> Result<Batch> {
        let (h, w) = (samples[0].height, samples[0].width);
        for (s, item) in samples.iter().zip(items) {
            if (s.height, s.width) != (h, w) {
                bail!(
                    "{}: is {}x{}, other images in its batch are {h}x{w}; all images must have one size",
                    item.image.display(),
                    s.height,
                    s.width
                );
            }
        }
        let n = samples.len() as i64;
        let (hi, wi) = (h as i64, w as i64);
        let cat =
            |f: &dyn Fn(&Sample) -> &[f32]| -> Vec<f32> { samples.iter().flat_map(|s| f(s).iter().copied()).collect() };
        let seg: Vec<i64> = samples.iter().flat_map(|s| s.seg.iter().copied()).collect();
        Ok(Batch {
            image: Tensor::from_slice(&cat(&|s| &s.image)).view([n, 3, hi, wi]),
            seg: Tensor::from_slice(&seg).view([n, hi, wi]),
            normal: Tensor::from_slice(&cat(&|s| &s.normal)).view([n, 3, hi, wi]),
            depth: Tensor::from_slice(&cat(&|s| &s.depth)).view([n, 1, hi, wi]),
        })
    }
}

/// Decodes a batch's samples on up to one thread per core, in order, so that large images (PNG
/// decoding is the slow part) keep up with a GPU.
fn load_parallel(items: &[&Item]) -> Result<Vec<Sample>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len())
        .max(1);
    if threads == 1 {
        return items.iter().map(|item| item.load()).collect();
    }
    let per = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|chunk| scope.spawn(move || chunk.iter().map(|item| item.load()).collect::<Result<Vec<_>>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
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
    fn spawn(items: Vec<Item>, batch: usize, shuffle_seed: Option<u64>, bound_for: Device) -> Loader {
        let (tx, rx) = sync_channel::<Result<Batch>>(2);
        let handle = std::thread::spawn(move || {
            let mut rng = shuffle_seed.map(ChaCha8Rng::seed_from_u64);
            loop {
                let mut order: Vec<usize> = (0..items.len()).collect();
                if let Some(rng) = rng.as_mut() {
                    order.shuffle(rng);
                }
                // An endless (shuffled) stream uses full batches only, so every step sees `batch` samples.
                let chunks: Vec<&[usize]> = order
                    .chunks(batch)
                    .filter(|c| rng.is_none() || c.len() == batch || items.len() < batch)
                    .collect();
                for chunk in chunks {
                    let picked: Vec<&Item> = chunk.iter().map(|&i| &items[i]).collect();
                    let result = load_parallel(&picked).and_then(|s| Batch::stack(s, &picked)).map(|b| {
                        if bound_for.is_cuda() {
                            b.pinned(bound_for)
                        } else {
                            b
                        }
                    });
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

    /// One pass over `items` in order; the last batch may be smaller. Batches `bound_for` a GPU are
    /// built in pinned memory, so that their copy overlaps the work queued before it.
    pub fn sequential(items: Vec<Item>, batch: usize, bound_for: Device) -> Loader {
        Loader::spawn(items, batch.max(1), None, bound_for)
    }

    /// An endless stream, reshuffled every epoch from `seed`; `bound_for` as in [`Loader::sequential`].
    pub fn shuffled(items: Vec<Item>, batch: usize, seed: u64, bound_for: Device) -> Loader {
        Loader::spawn(items, batch.max(1), Some(seed), bound_for)
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
