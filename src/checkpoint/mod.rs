//! Checkpoint I/O: safetensors files whose `__metadata__` carries the model graph and task list.
//!
//! Reading maps the file and parses the header only; tensor data is touched when a tensor is loaded.

pub mod format;
pub mod hf_folder;
pub mod metadata;
pub mod packed;
pub mod writer;

use crate::graph::interpreter::Params;
use crate::graph::Model;
use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Element types `cut` reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    BF16,
    /// Only for integer buffers such as batch norm's `num_batches_tracked`.
    I64,
    /// Only for the bitmasks of packed tensors.
    U8,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 => 8,
            DType::U8 => 1,
        }
    }
    pub fn safetensors_name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I64 => "I64",
            DType::U8 => "U8",
        }
    }
    pub fn kind(self) -> Kind {
        match self {
            DType::F32 => Kind::Float,
            DType::F16 => Kind::Half,
            DType::BF16 => Kind::BFloat16,
            DType::I64 => Kind::Int64,
            DType::U8 => Kind::Uint8,
        }
    }
    pub fn parse(text: &str) -> Result<DType> {
        Ok(match text.to_ascii_lowercase().as_str() {
            "f32" | "float32" => DType::F32,
            "f16" | "float16" | "half" => DType::F16,
            "bf16" | "bfloat16" => DType::BF16,
            other => bail!("unknown dtype '{other}' (expected f32, f16 or bf16)"),
        })
    }
    fn from_safetensors(dtype: Dtype) -> Option<DType> {
        match dtype {
            Dtype::F32 => Some(DType::F32),
            Dtype::F16 => Some(DType::F16),
            Dtype::BF16 => Some(DType::BF16),
            Dtype::I64 => Some(DType::I64),
            Dtype::U8 => Some(DType::U8),
            _ => None,
        }
    }
    /// True when the little-endian element is zero (either sign for floats).
    pub fn is_zero(self, bytes: &[u8]) -> bool {
        self.classify(bytes).zero
    }

    /// What a little-endian element is, read from its bits: zero (either sign), not finite (NaN or
    /// infinity: the exponent all ones), negative (sign set, not zero). Integers are never
    /// non-finite or negative here: nothing checks their sign.
    pub fn classify(self, bytes: &[u8]) -> Element {
        // (bits, sign bit, exponent mask) of a float format.
        let (bits, sign, exponent) = match self {
            DType::F32 => (u32::from_le_bytes(bytes.try_into().unwrap()), 1 << 31, 0x7f80_0000),
            DType::F16 => (u16::from_le_bytes(bytes.try_into().unwrap()) as u32, 1 << 15, 0x7c00),
            DType::BF16 => (u16::from_le_bytes(bytes.try_into().unwrap()) as u32, 1 << 15, 0x7f80),
            DType::I64 | DType::U8 => {
                let zero = bytes.iter().all(|&b| b == 0);
                return Element {
                    zero,
                    non_finite: false,
                    negative: false,
                };
            }
        };
        let zero = bits & !sign == 0;
        Element {
            zero,
            non_finite: bits & exponent == exponent,
            negative: bits & sign != 0 && !zero,
        }
    }
}

/// What one stored element is (see [`DType::classify`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Element {
    pub zero: bool,
    pub non_finite: bool,
    pub negative: bool,
}

/// What streaming a tensor's stored values found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ValueScan {
    /// Exactly-zero elements, those a packed layout leaves out included.
    pub zeros: usize,
    pub non_finite: bool,
    pub negative: bool,
}

impl ValueScan {
    fn add(&mut self, dtype: DType, bytes: &[u8]) {
        for b in bytes.chunks_exact(dtype.size()) {
            let e = dtype.classify(b);
            self.zeros += usize::from(e.zero);
            self.non_finite |= e.non_finite;
            self.negative |= e.negative;
        }
    }

    /// What is wrong with the values for a tensor of this role, if anything: NaN or infinity
    /// anywhere, or a negative batch-norm running variance.
    pub fn problem(&self, role: crate::graph::ParamRole) -> Option<&'static str> {
        if self.non_finite {
            Some("holds non-finite values (NaN or infinity)")
        } else if self.negative && role == crate::graph::ParamRole::BnRunningVar {
            Some("is a batch-norm running variance with negative values")
        } else {
            None
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::U8 => "u8",
        })
    }
}

/// Byte range within the data section.
pub type Range = (usize, usize);

#[derive(Clone, Debug, PartialEq)]
pub enum Storage {
    Dense(Range),
    /// A bitmask of the non-zero positions and the non-zero values, in order (see `packed`).
    Packed {
        mask: Range,
        values: Range,
        nnz: usize,
    },
}

/// A logical tensor: what the graph sees, however it is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub storage: Storage,
}

impl TensorEntry {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Bytes on disk.
    pub fn bytes(&self) -> usize {
        match self.storage {
            Storage::Dense((b, e)) => e - b,
            Storage::Packed { mask, values, .. } => (mask.1 - mask.0) + (values.1 - values.0),
        }
    }
}

/// An open checkpoint: the mapped file and its parsed header.
pub struct Checkpoint {
    pub path: PathBuf,
    file: File,
    map: Mmap,
    data_start: usize,
    pub tensors: BTreeMap<String, TensorEntry>,
    pub metadata: BTreeMap<String, String>,
    /// Read from an ONNX file (imported into a temporary checkpoint): `--task-kinds` then names
    /// the kinds of its outputs.
    pub imported: bool,
}

pub use crate::families::{LoadOptions, LoadedModel};

fn describe(err: SafeTensorError) -> String {
    match err {
        // Framing errors: most often a file of another kind (text, a pickle) given by mistake.
        SafeTensorError::HeaderTooSmall => "file is shorter than the 8-byte header length".into(),
        SafeTensorError::InvalidHeaderLength => {
            "not a safetensors file? its header length runs past the end of the file".into()
        }
        SafeTensorError::HeaderTooLarge => {
            "not a safetensors file? its first 8 bytes declare a header over 100 MB".into()
        }
        SafeTensorError::InvalidHeader(e) => format!("not a safetensors file? its header is not UTF-8 ({e})"),
        SafeTensorError::InvalidHeaderDeserialization(e) => {
            format!("header is not valid safetensors JSON ({e})")
        }
        SafeTensorError::InvalidOffset(name) => {
            format!("tensor '{name}' has data offsets that overlap another tensor or leave a gap")
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "tensor data does not end where the file ends (truncated or padded file)".into()
        }
        SafeTensorError::ValidationOverflow => "a tensor's shape overflows".into(),
        other => format!("{other:?}"),
    }
}

/// Names the first tensor whose byte range disagrees with its dtype and shape, for errors the
/// safetensors crate reports without a name.
fn diagnose_sizes(header: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(header).ok()?;
    for (name, info) in value.as_object()? {
        if name == "__metadata__" {
            continue;
        }
        let dtype: Dtype = serde_json::from_value(info.get("dtype")?.clone()).ok()?;
        let shape: Vec<usize> = serde_json::from_value(info.get("shape")?.clone()).ok()?;
        let offsets: (usize, usize) = serde_json::from_value(info.get("data_offsets")?.clone()).ok()?;
        let Some(expected) = shape
            .iter()
            .try_fold(dtype.bitsize() / 8, |acc: usize, &d| acc.checked_mul(d))
        else {
            return Some(format!(
                "tensor '{name}' has shape {shape:?}, whose byte count overflows"
            ));
        };
        if offsets.1 < offsets.0 || offsets.1 - offsets.0 != expected {
            return Some(format!(
                "tensor '{name}' declares bytes {}..{} but its dtype and shape {:?} need {expected} bytes",
                offsets.0, offsets.1, shape
            ));
        }
    }
    None
}

/// The first tensor, in order of its data offsets, that does not start where the ones before it end.
fn diagnose_offsets(header: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(header).ok()?;
    let mut ranges: Vec<(usize, usize, &str)> = Vec::new();
    for (name, info) in value.as_object()? {
        if name != "__metadata__" {
            let (start, end): (usize, usize) = serde_json::from_value(info.get("data_offsets")?.clone()).ok()?;
            ranges.push((start, end, name));
        }
    }
    ranges.sort();
    let mut expected = 0;
    for (start, end, name) in ranges {
        if start != expected {
            let how = if start < expected {
                "overlaps the tensor before it"
            } else {
                "leaves a gap"
            };
            return Some(format!(
                "tensor '{name}' starts at byte {start} of the data, where the tensors before it end at {expected}: it {how}"
            ));
        }
        expected = end;
    }
    None
}

impl Checkpoint {
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint> {
        Checkpoint::open_with(path, &LoadOptions::default())
    }

    /// Opens a checkpoint, a Hugging Face folder or an ONNX file (imported with `opts`'s input
    /// sizes, which only an ONNX file takes).
    pub fn open_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Checkpoint> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display();
        // Before opening: opening a FIFO blocks until something writes to it.
        let meta = std::fs::metadata(&path).map_err(|e| anyhow!("{shown}: cannot open ({e})"))?;
        if meta.is_dir() {
            // A Hugging Face model folder: its weights file.
            let inside = path.join("model.safetensors");
            if inside.is_file() {
                return Checkpoint::open_with(inside, opts);
            }
            bail!("{shown}: is a directory without a model.safetensors (give a checkpoint file, or a Hugging Face model folder)");
        }
        if !meta.is_file() {
            bail!("{shown}: not a regular file (a FIFO, device or socket); give a checkpoint file");
        }
        if is_onnx(&path) {
            return Checkpoint::from_onnx(path, &opts.input_sizes);
        }
        if let Some(name) = opts.input_sizes.keys().next() {
            let flag = match name.as_str() {
                "" => "--input SIZE".to_string(),
                n => format!("--input {n}:SIZE"),
            };
            crate::usage_bail!(
                "{shown}: {flag} sets the size an ONNX file leaves symbolic; this checkpoint records its own sizes"
            );
        }
        let file = File::open(&path).map_err(|e| anyhow!("{shown}: cannot open ({e})"))?;
        Checkpoint::from_file(path, file)
    }

    /// An ONNX file, imported (`crate::onnx::import`) into an anonymous temporary checkpoint, so
    /// every command reads it as it reads its own files; `path` stays the ONNX file's.
    pub fn from_onnx(path: PathBuf, input_sizes: &BTreeMap<String, Vec<usize>>) -> Result<Checkpoint> {
        use std::io::Write;
        let options = crate::onnx::import::ImportOptions {
            input_sizes: input_sizes.clone(),
            ..Default::default()
        };
        let imported = crate::onnx::import::import(&path, &options)?;
        let mut file = tempfile::tempfile().map_err(|e| anyhow!("a temporary file for the import: {e}"))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut file);
        writer::write_model(&mut out, &imported.model, &imported.params, DType::F32, None)?;
        out.flush()?;
        drop(out);
        let mut ckpt = Checkpoint::from_file(path, file)?;
        ckpt.imported = true;
        Ok(ckpt)
    }

    /// The checkpoint in `file`; `path` names it in messages.
    fn from_file(path: PathBuf, file: File) -> Result<Checkpoint> {
        let shown = path.display();
        let meta = file.metadata().map_err(|e| anyhow!("{shown}: cannot open ({e})"))?;
        if meta.len() < 8 {
            bail!(
                "{shown}: file is shorter than the 8-byte header length ({} bytes)",
                meta.len()
            );
        }
        // SAFETY: the map is read-only; a file truncated underneath us is the caller's race, as with
        // any memory-mapped reader.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| anyhow!("{shown}: cannot map ({e})"))?;
        // serde keeps the last of two equal keys; a header that names a tensor or a metadata field
        // twice is refused instead of read by that accident (before the offsets are checked, which
        // the surviving key's would fail in a confusing way).
        // The header as its first 8 bytes declare it (empty when that runs past the file; the
        // crate's read below then says so).
        let declared = u64::from_le_bytes(map[..8].try_into().expect("8 bytes checked above"));
        let header: &[u8] = usize::try_from(declared)
            .ok()
            .and_then(|n| map.get(8..8usize.checked_add(n)?))
            .unwrap_or(&[]);
        if let Some(key) = duplicate_key(header) {
            bail!("{shown}: the header names '{key}' twice");
        }
        let (header_len, parsed) = match SafeTensors::read_metadata(&map[..]) {
            Ok(ok) => ok,
            Err(err) => {
                let detail = match err {
                    SafeTensorError::TensorInvalidInfo => diagnose_sizes(header)
                        .unwrap_or_else(|| "a tensor's byte range does not match its dtype and shape".into()),
                    SafeTensorError::ValidationOverflow => {
                        diagnose_sizes(header).unwrap_or_else(|| describe(SafeTensorError::ValidationOverflow))
                    }
                    // The crate names whichever tensor its hash map gave first; name the first one
                    // in file order instead, the same every run.
                    SafeTensorError::InvalidOffset(name) => {
                        diagnose_offsets(header).unwrap_or_else(|| describe(SafeTensorError::InvalidOffset(name)))
                    }
                    other => describe(other),
                };
                bail!("{shown}: {detail}");
            }
        };
        let mut physical = BTreeMap::new();
        for (name, info) in parsed.tensors() {
            let dtype = DType::from_safetensors(info.dtype).ok_or_else(|| {
                anyhow!("{shown}: tensor '{name}' has dtype {:?}, which cut does not handle (f32, f16, bf16; i64 for counters)", info.dtype)
            })?;
            let storage = Storage::Dense(info.data_offsets);
            physical.insert(
                name.clone(),
                TensorEntry {
                    name,
                    dtype,
                    shape: info.shape.clone(),
                    storage,
                },
            );
        }
        let metadata: BTreeMap<String, String> = parsed.metadata().clone().unwrap_or_default().into_iter().collect();
        let tensors = packed::logical_entries(physical, &metadata).map_err(|e| anyhow!("{shown}: {e:#}"))?;
        Ok(Checkpoint {
            path,
            file,
            map,
            data_start: 8 + header_len,
            tensors,
            metadata,
            imported: false,
        })
    }

    /// The size of the file on disk (an imported ONNX file's, not its temporary checkpoint's).
    pub fn file_len(&self) -> usize {
        if self.imported {
            if let Ok(meta) = std::fs::metadata(&self.path) {
                return meta.len() as usize;
            }
        }
        self.map.len()
    }

    /// Raw little-endian bytes of a range of the data section.
    pub fn raw(&self, range: Range) -> &[u8] {
        &self.map[self.data_start + range.0..self.data_start + range.1]
    }

    pub fn entry(&self, name: &str) -> Result<&TensorEntry> {
        self.tensors
            .get(name)
            .ok_or_else(|| anyhow!("{}: tensor '{name}' is missing", self.path.display()))
    }

    /// Loads a tensor on `device`; floating-point tensors come back as f32.
    pub fn tensor(&self, name: &str, device: Device) -> Result<Tensor> {
        let entry = self.entry(name)?;
        let shape: Vec<i64> = entry.shape.iter().map(|&d| d as i64).collect();
        let t = match entry.storage {
            Storage::Dense(range) => Ok(Tensor::f_from_data_size(self.raw(range), &shape, entry.dtype.kind())?),
            Storage::Packed { mask, values, nnz } => {
                packed::unpack(self.raw(mask), self.raw(values), nnz, &shape, entry.dtype.kind())
            }
        }
        .with_context(|| format!("{}: tensor '{name}'", self.path.display()))?;
        let t = if entry.dtype == DType::I64 {
            t
        } else {
            t.to_kind(Kind::Float)
        };
        Ok(t.to_device(device))
    }

    /// Scans a tensor's stored values for zeros and for values no model should hold, and checks a
    /// packed mask against its values as loading does. Reads through a small buffer rather than
    /// the map, so that scanning a whole file does not pull it into this process's resident memory.
    pub fn scan(&self, entry: &TensorEntry) -> Result<ValueScan> {
        let (range, implicit) = match entry.storage {
            Storage::Dense(range) => (range, 0),
            Storage::Packed { mask, values, nnz } => {
                let mut kept = 0usize;
                self.read_through(entry, mask, 1, |bytes| {
                    kept += bytes.iter().map(|b| b.count_ones() as usize).sum::<usize>()
                })?;
                // Bits past the last element are padding; a writer leaves them clear.
                if kept != nnz {
                    bail!(
                        "{}: tensor '{}': mask keeps {kept} elements but {nnz} values are stored",
                        self.path.display(),
                        entry.name
                    );
                }
                (values, entry.numel() - nnz)
            }
        };
        let mut scan = ValueScan {
            zeros: implicit,
            ..Default::default()
        };
        self.read_through(entry, range, entry.dtype.size(), |bytes| scan.add(entry.dtype, bytes))?;
        Ok(scan)
    }

    /// Calls `each` on consecutive chunks (whole elements of `size` bytes) of a byte range of the
    /// data, read with `pread` through a 1 MB buffer.
    fn read_through(&self, entry: &TensorEntry, range: Range, size: usize, mut each: impl FnMut(&[u8])) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; (1 << 20) / size * size];
        let (mut pos, end) = (self.data_start + range.0, self.data_start + range.1);
        while pos < end {
            let n = buf.len().min(end - pos);
            self.file
                .read_exact_at(&mut buf[..n], pos as u64)
                .with_context(|| format!("{}: reading tensor '{}'", self.path.display(), entry.name))?;
            each(&buf[..n]);
            pos += n;
        }
        Ok(())
    }

    /// The model this checkpoint holds: from `cut.graph` metadata, or inferred from reference
    /// SceneNet tensor names when there is none. The tensors are checked against the graph.
    pub fn model(&self, opts: &LoadOptions) -> Result<LoadedModel> {
        let shown = self.path.display();
        let mut loaded = if self.imported {
            let mut model = metadata::read_model(&self.metadata).with_context(|| format!("{shown}"))?;
            name_output_kinds(&mut model, opts).with_context(|| format!("{shown}"))?;
            LoadedModel {
                model,
                inferred: false,
                warnings: Vec::new(),
                ignored: Vec::new(),
            }
        } else if self.metadata.contains_key(metadata::GRAPH_KEY) {
            if opts.task_names.is_some() || opts.task_kinds.is_some() {
                bail!("{shown}: --task-names and --task-kinds only apply to checkpoints without a cut graph; this one has its own task list");
            }
            let model = metadata::read_model(&self.metadata).with_context(|| format!("{shown}"))?;
            LoadedModel {
                model,
                warnings: Vec::new(),
                inferred: false,
                ignored: Vec::new(),
            }
        } else {
            let shapes: BTreeMap<&str, &[usize]> = self
                .tensors
                .values()
                .map(|e| (e.name.as_str(), e.shape.as_slice()))
                .collect();
            let no_graph = format!("no '{}' in the metadata", metadata::GRAPH_KEY);
            let opts = LoadOptions {
                folder: self.path.parent().map(Path::to_path_buf),
                ..opts.clone()
            };
            crate::families::recognise(&shapes, &opts, &no_graph).with_context(|| format!("{shown}"))?
        };
        crate::tasks::check_specs(&loaded.model.tasks).with_context(|| format!("{shown}"))?;
        if let Some(json) = &loaded.model.tokenizer {
            let source = if self.metadata.contains_key(metadata::GRAPH_KEY) {
                format!("{shown}: metadata field '{}'", metadata::TOKENIZER_KEY)
            } else {
                self.path.with_file_name("tokenizer.json").display().to_string()
            };
            crate::data::text::check_tokenizer(json, loaded.model.graph.vocab_rows()).with_context(|| source)?;
        }
        self.check_against(&loaded.model, &loaded.ignored)
            .with_context(|| format!("{shown}"))?;
        if loaded
            .model
            .graph
            .inputs
            .iter()
            .any(|i| i.dims.first() == Some(&crate::graph::Dim::Fixed(3)))
        {
            crate::families::fill_image_normalisation(&mut loaded.model.graph).with_context(|| format!("{shown}"))?;
        }
        if let Some(norm) = &opts.normalisation {
            loaded
                .model
                .graph
                .set_image_normalisation(norm)
                .with_context(|| format!("{shown}"))?;
        }
        Ok(loaded)
    }

    /// One error listing the first few missing, extra or mis-shaped tensors.
    /// The storage dtype of the file's floating-point tensors (the first one's; f32 when none).
    pub fn float_dtype(&self) -> DType {
        self.tensors
            .values()
            .map(|e| e.dtype)
            .find(|d| matches!(d, DType::F32 | DType::F16 | DType::BF16))
            .unwrap_or(DType::F32)
    }

    /// Tensors named in `ignored` may be in the file without the graph reading them.
    pub fn check_against(&self, model: &Model, ignored: &[String]) -> Result<()> {
        let specs = model.graph.param_specs();
        let mut problems = Vec::new();
        let mut count = 0;
        for spec in &specs {
            match self.tensors.get(&spec.name) {
                None => {
                    count += 1;
                    problems.push(format!("'{}' missing (expected {:?})", spec.name, spec.shape));
                }
                Some(entry) if entry.shape != spec.shape => {
                    count += 1;
                    problems.push(format!(
                        "'{}' expected {:?}, found {:?}",
                        spec.name, spec.shape, entry.shape
                    ));
                }
                Some(entry)
                    if (entry.dtype == DType::I64) != (spec.role == crate::graph::ParamRole::BnBatchesTracked) =>
                {
                    count += 1;
                    problems.push(format!(
                        "'{}' has dtype {}, which does not suit its role",
                        spec.name, entry.dtype
                    ));
                }
                _ => {}
            }
        }
        let known: std::collections::BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        for name in self.tensors.keys() {
            if !known.contains(name.as_str()) && !ignored.contains(name) {
                count += 1;
                problems.push(format!("'{name}' is not used by the graph"));
            }
        }
        if count > 0 {
            problems.truncate(5);
            let more = if count > 5 {
                format!(" and {} more", count - 5)
            } else {
                String::new()
            };
            bail!(
                "graph does not match the tensors ({count} problems): {}{more}",
                problems.join("; ")
            );
        }
        Ok(())
    }

    /// Loads every tensor the graph uses, as trainable-ready f32 (i64 counters stay i64), refused
    /// if any holds a value no model should (see [`ValueScan::problem`]).
    pub fn load_params(&self, model: &Model, device: Device) -> Result<Params> {
        model
            .graph
            .param_specs()
            .iter()
            .map(|s| {
                let t = self.tensor(&s.name, device)?;
                let entry = self.entry(&s.name)?;
                let stored = match entry.storage {
                    Storage::Dense(range) | Storage::Packed { values: range, .. } => range,
                };
                // The bytes were just decoded from the map: checking them reads nothing new.
                let mut scan = ValueScan::default();
                scan.add(entry.dtype, self.raw(stored));
                if let Some(problem) = scan.problem(s.role) {
                    bail!("{}: tensor '{}' {problem}", self.path.display(), s.name);
                }
                Ok((s.name.clone(), t))
            })
            .collect()
    }
}

/// The first key named twice in a safetensors header: among the tensors, or among the
/// `__metadata__` fields (reported as `__metadata__.KEY`).
fn duplicate_key(header: &[u8]) -> Option<String> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
    use std::collections::HashSet;

    /// Visits one JSON object; with `nested`, the `__metadata__` value is visited the same way.
    struct Keys {
        nested: bool,
    }
    impl<'de> Visitor<'de> for Keys {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
            let (mut seen, mut first) = (HashSet::new(), None);
            while let Some(key) = map.next_key::<String>()? {
                if self.nested && key == "__metadata__" {
                    if let Some(inner) = map.next_value_seed(Keys { nested: false })? {
                        first.get_or_insert(format!("__metadata__.{inner}"));
                    }
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
                if !seen.insert(key.clone()) {
                    first.get_or_insert(key);
                }
            }
            Ok(first)
        }
    }
    impl<'de> DeserializeSeed<'de> for Keys {
        type Value = Option<String>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(header);
    Keys { nested: true }.deserialize(&mut de).ok().flatten()
}

/// Whether `path` names an ONNX file (by its extension).
pub fn is_onnx(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// `--task-kinds` on an imported model: kinds by output name ("seg:segmentation"), or in output
/// order.
fn name_output_kinds(model: &mut crate::graph::Model, opts: &LoadOptions) -> Result<()> {
    let Some(kinds) = &opts.task_kinds else {
        if opts.task_names.is_some() {
            crate::usage_bail!("--task-names does not apply to an ONNX file: its tasks are its outputs");
        }
        return Ok(());
    };
    let names: Vec<String> = match &opts.task_names {
        Some(n) => n.clone(),
        None => model.tasks.iter().map(|t| t.name.clone()).collect(),
    };
    if names.len() != kinds.len() {
        crate::usage_bail!("--task-kinds gives {} kinds for {} outputs", kinds.len(), names.len());
    }
    for (name, kind) in names.iter().zip(kinds) {
        let Some(task) = model.tasks.iter_mut().find(|t| &t.name == name) else {
            let outputs: Vec<&str> = model.tasks.iter().map(|t| t.name.as_str()).collect();
            crate::usage_bail!(
                "--task-kinds names '{name}', which is not an output (outputs: {})",
                outputs.join(", ")
            );
        };
        task.kind = *kind;
    }
    Ok(())
}

/// sha256 of a file, hex, read in chunks.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
