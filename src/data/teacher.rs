//! A teacher: the unpruned model run beside the data, whose outputs become the labels of the
//! tasks distilled from it (see `crate::tasks::distill`). [`Taught`] wraps a split so that every
//! batch a loop draws from it (scoring, fine-tuning, validation, evaluation) carries the teacher's
//! outputs, computed on the loader's thread while the previous batch is in use.

use super::example::{Batch, Example, Examples, Samples};
use super::Dataset;
use crate::graph::interpreter::{forward_inputs, Mode, Params};
use crate::graph::{Graph, Model, TaskSpec};
use anyhow::Result;
use std::sync::{Arc, Mutex};
use tch::Device;

/// The batch label that carries the teacher's output for `task`.
pub fn teacher_label(task: &str) -> String {
    format!("teacher:{task}")
}

/// The model the distilled tasks learn from, with its weights.
pub struct Teacher {
    /// Tensors are not `Sync`; the loader threads take turns.
    state: Mutex<State>,
}

struct State {
    graph: Graph,
    params: Params,
    tasks: Vec<String>,
    device: Device,
}

impl Teacher {
    /// `model` with `params` (on `device`, shared, not copied: nothing may change them in
    /// place while the teacher lives), teaching `tasks`.
    pub fn new(model: &Model, params: &Params, tasks: &[&TaskSpec], device: Device) -> Teacher {
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        let (graph, _) = crate::graph::passes::fuse_conv_relu(&model.graph, &names);
        Teacher {
            state: Mutex::new(State {
                graph,
                params: params.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect(),
                tasks: names.iter().map(|s| s.to_string()).collect(),
                device,
            }),
        }
    }

    /// The batch with the teacher's output for each task added as the label
    /// [`teacher_label`]`(task)`, on the batch's device.
    pub fn teach(&self, mut batch: Batch) -> Result<Batch> {
        let state = self
            .state
            .lock()
            .map_err(|_| anyhow::anyhow!("a thread running the teacher model panicked"))?;
        let _guard = tch::no_grad_guard();
        let on_device = batch.to_device(state.device);
        let names: Vec<&str> = state.tasks.iter().map(String::as_str).collect();
        let inputs = on_device.graph_inputs(&state.graph)?;
        let graph = crate::graph::passes::slice_dead_taps_for(&state.graph, &inputs)?;
        let outputs = forward_inputs(&graph, &state.params, &inputs, &names, Mode::Eval)?;
        let home = batch.inputs.values().next().map_or(Device::Cpu, |t| t.device());
        for (task, output) in outputs {
            batch.labels.insert(teacher_label(&task), output.to_device(home));
        }
        Ok(batch)
    }
}

/// A split whose batches carry a teacher's outputs.
pub struct Taught {
    source: Samples,
    teacher: Arc<Teacher>,
}

impl Examples for Taught {
    fn count(&self) -> usize {
        self.source.count()
    }
    fn load(&self, index: usize) -> Result<Example> {
        self.source.load(index)
    }
    fn describe(&self, index: usize) -> String {
        self.source.describe(index)
    }
    fn complete(&self, batch: Batch) -> Result<Batch> {
        self.teacher.teach(self.source.complete(batch)?)
    }
    fn labelled(&self) -> bool {
        self.source.labelled()
    }
}

impl Dataset {
    /// The dataset with every split's batches carrying `teacher`'s outputs.
    pub fn taught(&self, teacher: Arc<Teacher>) -> Dataset {
        let wrap = |s: &Samples| -> Samples {
            Arc::new(Taught {
                source: s.clone(),
                teacher: teacher.clone(),
            })
        };
        Dataset {
            root: self.root.clone(),
            index_path: self.index_path.clone(),
            train: wrap(&self.train),
            test: wrap(&self.test),
            val: self.val.as_ref().map(wrap),
        }
    }

    /// Whether the dataset's examples carry labels.
    pub fn labelled(&self) -> bool {
        self.train.labelled()
    }
}

/// The dataset a run with `tasks` reads: as it is when none is distilled, else carrying the
/// outputs of `model` (the unpruned model, all of `tasks`) with `params` on `device`.
pub fn for_tasks(data: &Dataset, model: &Model, params: &Params, tasks: &[TaskSpec], device: Device) -> Dataset {
    let distilled: Vec<&TaskSpec> = tasks.iter().filter(|t| t.distill).collect();
    if distilled.is_empty() {
        return data.clone();
    }
    data.taught(Arc::new(Teacher::new(model, params, &distilled, device)))
}
