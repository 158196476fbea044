//! What a dataset yields, whatever its files: examples of named input arrays (what the graph reads)
//! and named label arrays (what task kinds score against), and batches of them. The NYUv2 layout is
//! one source of examples (`layout.rs`); any other implements [`Examples`] and gets the background
//! loader, batching and device moves for free.

use crate::graph::Graph;
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use tch::{Device, Tensor};

/// The values of one array, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// One named array of an example (no batch dimension).
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub shape: Vec<i64>,
    pub values: Values,
}

impl Field {
    pub fn f32(name: &str, shape: Vec<i64>, values: Vec<f32>) -> Field {
        Field {
            name: name.into(),
            shape,
            values: Values::F32(values),
        }
    }
    pub fn i64(name: &str, shape: Vec<i64>, values: Vec<i64>) -> Field {
        Field {
            name: name.into(),
            shape,
            values: Values::I64(values),
        }
    }
}

/// One example: the inputs a graph reads and the labels tasks score against, each by name.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub inputs: Vec<Field>,
    pub labels: Vec<Field>,
}

/// A list of examples loaded on demand (a dataset split). Loading runs on background threads.
pub trait Examples: Send + Sync + 'static {
    fn count(&self) -> usize;
    fn load(&self, index: usize) -> Result<Example>;
    /// What names example `index` in an error (its file).
    fn describe(&self, index: usize) -> String;
    /// Adds to a batch of these examples what no single example holds (a teacher model's
    /// outputs, see `super::teacher`); the batch as it is by default.
    fn complete(&self, batch: Batch) -> Result<Batch> {
        Ok(batch)
    }
    /// Whether the examples carry labels (an unlabelled image folder does not).
    fn labelled(&self) -> bool {
        true
    }
}

impl std::fmt::Debug for dyn Examples {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Examples({} examples)", self.count())
    }
}

/// A dataset split, shared with the loader's threads.
pub type Samples = std::sync::Arc<dyn Examples>;

/// Some examples of another list, in the order given (a split carved out of a training list).
pub struct Subset {
    pub source: Samples,
    pub indices: Vec<usize>,
}

impl Examples for Subset {
    fn count(&self) -> usize {
        self.indices.len()
    }
    fn load(&self, index: usize) -> Result<Example> {
        self.source.load(self.indices[index])
    }
    fn describe(&self, index: usize) -> String {
        self.source.describe(self.indices[index])
    }
    fn complete(&self, batch: Batch) -> Result<Batch> {
        self.source.complete(batch)
    }
    fn labelled(&self) -> bool {
        self.source.labelled()
    }
}

/// A batch on the host or a device: the stacked inputs and labels, by name.
pub struct Batch {
    pub inputs: BTreeMap<String, Tensor>,
    pub labels: BTreeMap<String, Tensor>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.inputs.values().next().map_or(0, |t| t.size()[0] as usize)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The input called `name`.
    pub fn input(&self, name: &str) -> Result<&Tensor> {
        match self.inputs.get(name) {
            Some(t) => Ok(t),
            None => bail!(
                "the dataset gives no '{name}' input (it gives: {})",
                names(&self.inputs)
            ),
        }
    }

    /// The one input of a batch from a single-input dataset (an image dataset's images).
    pub fn only_input(&self) -> Result<&Tensor> {
        match self.inputs.values().collect::<Vec<_>>().as_slice() {
            [only] => Ok(only),
            _ => bail!(
                "the dataset gives {} inputs ({}) where one was expected",
                self.inputs.len(),
                names(&self.inputs)
            ),
        }
    }

    /// The batch's inputs under the names `graph` reads them by: each by its own name, or, for a
    /// graph and a dataset with one input each, that one.
    pub fn graph_inputs(&self, graph: &Graph) -> Result<BTreeMap<String, Tensor>> {
        graph
            .inputs
            .iter()
            .map(|decl| {
                let t = match (self.inputs.get(&decl.name), graph.inputs.len(), self.inputs.len()) {
                    (Some(t), _, _) => t,
                    (None, 1, 1) => self.only_input()?,
                    (None, _, _) => bail!(
                        "the graph reads input '{}', which the dataset does not give (it gives: {})",
                        decl.name,
                        names(&self.inputs)
                    ),
                };
                Ok((decl.name.clone(), t.shallow_clone()))
            })
            .collect()
    }

    /// The label called `name`, or `None` when the dataset has none.
    pub fn label(&self, name: &str) -> Option<&Tensor> {
        self.labels.get(name)
    }

    /// The label called `name`, or an error naming the labels the dataset gives.
    pub fn require_label(&self, name: &str) -> Result<&Tensor> {
        match self.labels.get(name) {
            Some(t) => Ok(t),
            None => bail!(
                "the dataset gives no '{name}' labels (it gives: {})",
                names(&self.labels)
            ),
        }
    }

    /// Copies the batch to `device`. From pinned host memory (see [`super::loader::Loader`]) the
    /// copies to a GPU run asynchronously, behind the work already queued; from pageable memory CUDA
    /// waits for them.
    pub fn to_device(&self, device: Device) -> Batch {
        self.map(|t| t.to_device_(device, t.kind(), true, false))
    }

    /// The batch in page-locked host memory, from which a GPU copies without blocking the host.
    /// (`_pin_memory` is what `pin_memory` calls; through tch the latter always names a device,
    /// which libtorch warns about on every call.)
    pub(super) fn pinned(&self, device: Device) -> Batch {
        self.map(|t| t.internal_pin_memory(device))
    }

    fn map(&self, f: impl Fn(&Tensor) -> Tensor) -> Batch {
        let each = |m: &BTreeMap<String, Tensor>| m.iter().map(|(k, t)| (k.clone(), f(t))).collect();
        Batch {
            inputs: each(&self.inputs),
            labels: each(&self.labels),
        }
    }

    /// Stacks examples (of `source`, at `indices`) into a batch: every example must have the same
    /// fields with the same shapes.
    pub(super) fn stack(examples: Vec<Example>, source: &dyn Examples, indices: &[usize]) -> Result<Batch> {
        let first = &examples[0];
        for (e, &i) in examples.iter().zip(indices) {
            let fields = e.inputs.len() + e.labels.len();
            if fields != first.inputs.len() + first.labels.len() {
                bail!(
                    "{}: has {fields} fields, the first of its batch other ones",
                    source.describe(i)
                );
            }
            for f in e.inputs.iter().chain(&e.labels) {
                let len = match &f.values {
                    Values::F32(v) => v.len(),
                    Values::I64(v) => v.len(),
                };
                if f.shape.iter().any(|&d| d < 0) || len as i64 != f.shape.iter().product::<i64>() {
                    bail!(
                        "{}: its {} holds {len} values for shape {:?}",
                        source.describe(i),
                        f.name,
                        f.shape
                    );
                }
            }
            for (a, b) in e
                .inputs
                .iter()
                .chain(&e.labels)
                .zip(first.inputs.iter().chain(&first.labels))
            {
                let same_type = std::mem::discriminant(&a.values) == std::mem::discriminant(&b.values);
                if a.name != b.name || a.shape != b.shape || !same_type {
                    bail!(
                        "{}: its {} is {:?}, the first of its batch has {} {:?}; all examples must have one size",
                        source.describe(i),
                        a.name,
                        a.shape,
                        b.name,
                        b.shape
                    );
                }
            }
        }
        let stack = |pick: &dyn Fn(&Example) -> &Vec<Field>| -> BTreeMap<String, Tensor> {
            pick(first)
                .iter()
                .enumerate()
                .map(|(k, f)| {
                    let mut shape = vec![examples.len() as i64];
                    shape.extend(&f.shape);
                    // Every example's field k has this field's type (checked above).
                    let t = match &f.values {
                        Values::F32(_) => concat(&examples, |e| match &pick(e)[k].values {
                            Values::F32(v) => v.as_slice(),
                            Values::I64(_) => &[],
                        }),
                        Values::I64(_) => concat(&examples, |e| match &pick(e)[k].values {
                            Values::I64(v) => v.as_slice(),
                            Values::F32(_) => &[],
                        }),
                    };
                    (f.name.clone(), t.view(shape.as_slice()))
                })
                .collect()
        };
        Ok(Batch {
            inputs: stack(&|e: &Example| &e.inputs),
            labels: stack(&|e: &Example| &e.labels),
        })
    }
}

/// The names of a batch's tensors, for messages.
fn names(m: &BTreeMap<String, Tensor>) -> String {
    m.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// One tensor of every example's values of one field, in order.
fn concat<'e, T: tch::kind::Element + Copy + 'e>(
    examples: &'e [Example],
    values: impl Fn(&'e Example) -> &'e [T],
) -> Tensor {
    let all: Vec<T> = examples.iter().flat_map(|e| values(e).iter().copied()).collect();
    Tensor::from_slice(&all)
}
