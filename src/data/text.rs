//! Text data: a folder with `train.jsonl` and `test.jsonl` (one JSON object per line). Each line
//! holds `"tokens": ["The", "jury", ...]` (or `"text": "..."` when no token task needs words) and,
//! per task, a label: a string for a sequence task, a list of one label per word for a token task.
//! Sub-words come from the model's `tokenizer.json` (Hugging Face `tokenizers`); a token task's
//! label sits on each word's first sub-word, [`IGNORE`] elsewhere. Every example is padded to the
//! longest encoded line of the dataset (at most `max_len` tokens; longer lines are truncated and
//! counted), so that batches stack.

use super::example::{Example, Examples, Field};
use super::Dataset;
use crate::graph::{TaskKind, TaskSpec};
use anyhow::{anyhow, bail, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokenizers::{InputSequence, Tokenizer};

/// The label of a token that carries none (special tokens, later sub-words, padding), and of a
/// text without a label for a task.
pub const IGNORE: i64 = -100;

/// How to read text data for a model.
pub struct TextOptions<'a> {
    /// The text of a `tokenizer.json`.
    pub tokenizer: &'a str,
    pub tasks: &'a [TaskSpec],
    /// Longest encoded line kept, special tokens included.
    pub max_len: usize,
    /// The most tokens the model's position table holds: a longer line is an error naming it.
    pub positions: Option<usize>,
    /// The graph's input names for the token ids and the attention mask (if it reads one).
    pub ids: &'a str,
    pub mask: Option<&'a str>,
}

/// What reading found worth saying.
#[derive(Clone, Debug, Default)]
pub struct TextStats {
    pub lines: usize,
    pub truncated: usize,
    /// The common padded length.
    pub length: usize,
}

/// One encoded line before padding.
struct Encoded {
    ids: Vec<i64>,
    /// Per task: its name, whether it labels tokens, and the labels.
    labels: Vec<(String, bool, Vec<i64>)>,
    line: usize,
}

/// The examples of one file, padded to a common length.
pub struct TextExamples {
    path: PathBuf,
    examples: Vec<Example>,
    lines: Vec<usize>,
    /// Whether any line labels any task.
    labelled: bool,
}

impl Examples for TextExamples {
    fn count(&self) -> usize {
        self.examples.len()
    }
    fn load(&self, index: usize) -> Result<Example> {
        Ok(self.examples[index].clone())
    }
    fn describe(&self, index: usize) -> String {
        format!("{}:{}", self.path.display(), self.lines[index])
    }
    fn labelled(&self) -> bool {
        self.labelled
    }
}

/// Loads a tokenizer file; see [`tokenizer_from_json`].
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let text = crate::fsio::read_input_text(path, crate::fsio::limit::TOKENIZER, "the tokenizer")?;
    tokenizer_from_json(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// A tokenizer for encoding single texts from the text of a `tokenizer.json`: padding and
/// truncation from the file are turned off (cut pads and truncates itself).
pub fn tokenizer_from_json(json: &str) -> Result<Tokenizer> {
    let mut t: Tokenizer = json.parse().map_err(|e| anyhow!("not a tokenizer ({e})"))?;
    t.with_padding(None);
    t.with_truncation(None).map_err(|e| anyhow!("{e}"))?;
    Ok(t)
}

/// Checks a model's tokenizer at load, so that a broken one fails there, named, and is never
/// copied into outputs: it parses, it has the token the model pads with, and every id it can
/// produce has a row in the embedding table (`vocab_rows`).
pub fn check_tokenizer(json: &str, vocab_rows: Option<usize>) -> Result<()> {
    let tokenizer = tokenizer_from_json(json)?;
    pad_id(&tokenizer)?;
    let Some(rows) = vocab_rows else { return Ok(()) };
    let vocab = tokenizer.get_vocab(true);
    let Some((token, &id)) = vocab.iter().max_by_key(|(_, &id)| id) else {
        bail!("the vocabulary is empty");
    };
    if id as usize >= rows {
        bail!("token '{token}' has id {id}, beyond the model's embedding table of {rows} rows");
    }
    Ok(())
}

/// The id the model pads with: the tokenizer's `[PAD]` or `<pad>` token.
fn pad_id(tokenizer: &Tokenizer) -> Result<i64> {
    ["[PAD]", "<pad>"]
        .iter()
        .find_map(|t| tokenizer.token_to_id(t))
        .map(i64::from)
        .ok_or_else(|| anyhow!("the model's tokenizer has no [PAD] or <pad> token"))
}

/// Opens a text dataset folder for a model's tasks.
/// `root` is a folder with `train.jsonl` and `test.jsonl` (and `val.jsonl` when it has one), or
/// one `.jsonl` file, of which a fixed share is held back as the test split (see
/// [`super::unlabelled::HELD_BACK`]).
pub fn open(root: &Path, opts: &TextOptions) -> Result<(Dataset, TextStats)> {
    let one_file = root.is_file();
    if !one_file && !root.is_dir() {
        bail!("{}: dataset folder does not exist", root.display());
    }
    let tokenizer = tokenizer_from_json(opts.tokenizer).map_err(|e| anyhow!("the model's tokenizer.json: {e}"))?;
    let pad = pad_id(&tokenizer)?;
    let mut stats = TextStats::default();
    let mut files = Vec::new();
    let names: &[&str] = if one_file {
        &[""]
    } else {
        &["train.jsonl", "test.jsonl", "val.jsonl"]
    };
    for &name in names {
        let path = if one_file { root.to_path_buf() } else { root.join(name) };
        if name == "val.jsonl" && !path.exists() {
            continue;
        }
        let encoded = read_file(&path, &tokenizer, opts, &mut stats)?;
        files.push((path, encoded));
    }
    let length = files
        .iter()
        .flat_map(|(_, e)| e.iter().map(|x| x.ids.len()))
        .max()
        .unwrap_or(1);
    stats.length = length;
    let mut splits = files.into_iter().map(|(path, encoded)| -> Arc<dyn Examples> {
        let lines = encoded.iter().map(|e| e.line).collect();
        let labelled = encoded.iter().any(|e| {
            e.labels
                .iter()
                .any(|(_, _, values)| values.iter().any(|&v| v != IGNORE))
        });
        let examples = encoded.into_iter().map(|e| pad_example(e, length, pad, opts)).collect();
        Arc::new(TextExamples {
            path,
            examples,
            lines,
            labelled,
        })
    });
    let first = splits.next().expect("one file at least");
    let (train, test) = if one_file {
        super::unlabelled::hold_back(first)?
    } else {
        (first, splits.next().expect("two files"))
    };
    Ok((
        Dataset {
            root: root.to_path_buf(),
            index_path: root.to_path_buf(),
            train,
            test,
            val: splits.next(),
        },
        stats,
    ))
}

/// The token ids of every line of a jsonl file of texts ("text", or "tokens" as a list of words;
/// other fields ignored), truncated to `max_len` keeping the closing special token, and the
/// tokenizer's padding id: for running a model on texts without labels (`cut predict`).
pub fn encode_unlabelled(path: &Path, tokenizer: &str, max_len: usize) -> Result<(Vec<Vec<i64>>, i64)> {
    let tokenizer = tokenizer_from_json(tokenizer).map_err(|e| anyhow!("the model's tokenizer.json: {e}"))?;
    let pad = pad_id(&tokenizer)?;
    let opts = TextOptions {
        tokenizer: "",
        tasks: &[],
        max_len,
        positions: None,
        ids: "",
        mask: None,
    };
    let encoded = read_file(path, &tokenizer, &opts, &mut TextStats::default())?;
    Ok((encoded.into_iter().map(|e| e.ids).collect(), pad))
}

fn pad_example(e: Encoded, length: usize, pad: i64, opts: &TextOptions) -> Example {
    let real = e.ids.len();
    let mut ids = e.ids;
    ids.resize(length, pad);
    let mask: Vec<i64> = (0..length).map(|i| i64::from(i < real)).collect();
    let len = length as i64;
    let labels = e
        .labels
        .into_iter()
        .map(|(task, per_token, mut values)| {
            if per_token {
                values.resize(length, IGNORE);
                Field::i64(&task, vec![len], values)
            } else {
                Field::i64(&task, vec![], values)
            }
        })
        .collect();
    Example {
        inputs: std::iter::once(Field::i64(opts.ids, vec![len], ids))
            .chain(opts.mask.map(|m| Field::i64(m, vec![len], mask)))
            .collect(),
        labels,
    }
}

fn read_file(path: &Path, tokenizer: &Tokenizer, opts: &TextOptions, stats: &mut TextStats) -> Result<Vec<Encoded>> {
    let bytes = crate::fsio::read_input(path, crate::fsio::limit::TEXT_DATA, "text data")?;
    let index: Vec<HashMap<&str, usize>> = opts
        .tasks
        .iter()
        .map(|t| {
            t.labels
                .as_ref()
                .map(|l| l.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect())
                .unwrap_or_default()
        })
        .collect();
    for t in opts.tasks {
        if t.labels.is_none() {
            bail!(
                "task '{}' has no label names: put labels.json ({{\"{}\": [\"label of row 0\", ...]}}) beside the model",
                t.name,
                t.name
            );
        }
    }
    let mut out = Vec::new();
    for (n, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = n + 1;
        let at = || format!("{}:{line}", path.display());
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = std::str::from_utf8(raw).map_err(|_| anyhow!("{}: not UTF-8", at()))?;
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| anyhow!("{}: not a JSON object ({e})", at()))?;
        let object = value
            .as_object()
            .ok_or_else(|| anyhow!("{}: not a JSON object", at()))?;
        let words: Option<Vec<&str>> = match object.get("tokens") {
            Some(serde_json::Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|w| {
                        w.as_str()
                            .ok_or_else(|| anyhow!("{}: field 'tokens' holds a non-string", at()))
                    })
                    .collect::<Result<_>>()?,
            ),
            Some(_) => bail!("{}: field 'tokens' is not a list of strings", at()),
            None => None,
        };
        let encoding = match (&words, object.get("text")) {
            (Some(w), _) => tokenizer.encode(InputSequence::from(w.clone()), true),
            (None, Some(serde_json::Value::String(t))) => {
                if let Some(task) = opts.tasks.iter().find(|t| t.kind == TaskKind::Token) {
                    bail!(
                        "{}: token task '{}' needs 'tokens' (a list of words), not 'text'",
                        at(),
                        task.name
                    );
                }
                tokenizer.encode(t.as_str(), true)
            }
            _ => bail!("{}: no 'tokens' (a list of words) or 'text' field", at()),
        }
        .map_err(|e| anyhow!("{}: cannot tokenize ({e})", at()))?;
        let mut ids: Vec<i64> = encoding.get_ids().iter().map(|&i| i64::from(i)).collect();
        let mut word_ids: Vec<Option<u32>> = encoding.get_word_ids().to_vec();
        if ids.len() > opts.max_len {
            stats.truncated += 1;
            // Keep the closing special token (BERT's [SEP], RoBERTa's </s>).
            let last = ids[ids.len() - 1];
            ids.truncate(opts.max_len.max(2) - 1);
            ids.push(last);
            word_ids.truncate(ids.len() - 1);
            word_ids.push(None);
        }
        if let Some(p) = opts.positions.filter(|&p| ids.len() > p) {
            bail!(
                "{}: {} tokens, more than the model's {p} positions (give --max-len {p} or less)",
                at(),
                ids.len()
            );
        }
        let mut labels = Vec::new();
        for (task, known) in opts.tasks.iter().zip(&index) {
            let lookup = |label: &str| -> Result<i64> {
                known.get(label).map(|&i| i as i64).ok_or_else(|| {
                    let mut names: Vec<&&str> = known.keys().collect();
                    names.sort();
                    let names: Vec<&str> = names.into_iter().take(8).copied().collect();
                    anyhow!(
                        "{}: task '{}' has label '{label}', which the model does not know (it knows {}{})",
                        at(),
                        task.name,
                        names.join(", "),
                        if known.len() > 8 { ", ..." } else { "" }
                    )
                })
            };
            let values = match (task.kind, object.get(&task.name)) {
                (_, None) | (_, Some(serde_json::Value::Null)) => {
                    if task.kind == TaskKind::Token {
                        vec![IGNORE; ids.len()]
                    } else {
                        vec![IGNORE]
                    }
                }
                (TaskKind::Token, Some(serde_json::Value::Array(items))) => {
                    let count = words.as_ref().map_or(0, Vec::len);
                    if items.len() != count {
                        bail!(
                            "{}: token task '{}' has {} labels for {count} words",
                            at(),
                            task.name,
                            items.len()
                        );
                    }
                    let word_labels: Vec<i64> = items
                        .iter()
                        .map(|v| match v.as_str() {
                            Some(s) => lookup(s),
                            None => bail!("{}: task '{}' holds a label that is not a string", at(), task.name),
                        })
                        .collect::<Result<_>>()?;
                    let mut seen = std::collections::HashSet::new();
                    word_ids
                        .iter()
                        .map(|w| match w {
                            Some(w) if seen.insert(*w) => word_labels[*w as usize],
                            _ => IGNORE,
                        })
                        .collect()
                }
                (TaskKind::Token, Some(_)) => bail!("{}: token task '{}' needs a list of labels", at(), task.name),
                (_, Some(serde_json::Value::String(s))) => vec![lookup(s)?],
                (_, Some(_)) => bail!("{}: sequence task '{}' needs one label (a string)", at(), task.name),
            };
            labels.push((task.name.clone(), task.kind == TaskKind::Token, values));
        }
        stats.lines += 1;
        out.push(Encoded { ids, labels, line });
    }
    if out.is_empty() {
        bail!("{}: no lines", path.display());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, kind: TaskKind, labels: &[&str]) -> TaskSpec {
        TaskSpec {
            name: name.into(),
            kind,
            outputs: labels.len(),
            labels: Some(labels.iter().map(|s| s.to_string()).collect()),
            distill: false,
        }
    }

    fn values(f: &Field) -> Vec<i64> {
        match &f.values {
            super::super::example::Values::I64(v) => v.clone(),
            _ => unreachable!(),
        }
    }

    /// Each word's label sits on its first sub-word; special tokens, later sub-words and padding
    /// carry IGNORE; a sequence label is one value; val.jsonl, when present, is the validation split.
    #[test]
    fn labels_align_with_first_sub_words() {
        let json = std::fs::read_to_string("tests/fixtures/text/bert/tokenizer.json").unwrap();
        let tokenizer = tokenizer_from_json(&json).unwrap();
        let words = ["Rain", "fell", "everywhere"];
        let enc = tokenizer.encode(&words[..], true).unwrap();
        let word_ids = enc.get_word_ids().to_vec();
        assert!(
            word_ids.iter().filter(|w| **w == Some(2)).count() > 1,
            "'everywhere' splits: {:?}",
            enc.get_tokens()
        );
        let dir = tempfile::tempdir().unwrap();
        let line = r#"{"tokens": ["Rain", "fell", "everywhere"], "pos": ["N", "V", "A"], "mood": "s"}"#;
        let short = r#"{"tokens": ["fell"], "pos": ["V"]}"#;
        std::fs::write(dir.path().join("train.jsonl"), format!("{line}\n{short}\n")).unwrap();
        std::fs::write(dir.path().join("test.jsonl"), format!("{short}\n")).unwrap();
        let tasks = [
            task("pos", TaskKind::Token, &["N", "V", "A"]),
            task("mood", TaskKind::Sequence, &["s", "q"]),
        ];
        let opts = TextOptions {
            tokenizer: &json,
            tasks: &tasks,
            max_len: 64,
            positions: None,
            ids: "input_ids",
            mask: Some("attention_mask"),
        };
        let (data, stats) = open(dir.path(), &opts).unwrap();
        assert_eq!((stats.lines, stats.length, stats.truncated), (3, enc.len(), 0));
        let first = data.train.load(0).unwrap();
        let pos = values(&first.labels[0]);
        let want: Vec<i64> = word_ids
            .iter()
            .enumerate()
            .map(|(i, w)| match w {
                Some(w) if i == 0 || word_ids[i - 1] != Some(*w) => *w as i64,
                _ => IGNORE,
            })
            .collect();
        assert_eq!(pos, want);
        assert_eq!(values(&first.labels[1]), vec![0]);
        // The shorter line: padded with IGNORE, and no mood label: IGNORE.
        let second = data.train.load(1).unwrap();
        assert_eq!(values(&second.labels[0]).iter().filter(|&&v| v != IGNORE).count(), 1);
        assert_eq!(values(&second.labels[1]), vec![IGNORE]);
        let fell = tokenizer.encode(&["fell"][..], true).unwrap().len() as i64;
        assert_eq!(
            values(&second.inputs[1]).iter().sum::<i64>(),
            fell,
            "mask: [CLS] fell [SEP]"
        );
        assert!(data.val.is_none());

        std::fs::write(dir.path().join("val.jsonl"), format!("{short}\n")).unwrap();
        let (data, _) = open(dir.path(), &opts).unwrap();
        let val = data.split(crate::data::Split::Val, 0.5).unwrap();
        assert_eq!(
            (val.count(), data.split(crate::data::Split::Train, 0.5).unwrap().count()),
            (1, 2)
        );
        assert!(val.describe(0).ends_with("val.jsonl:1"));

        // `text` instead of `tokens`: fine for sequence tasks, refused for a token task.
        let text_dir = tempfile::tempdir().unwrap();
        for f in ["train.jsonl", "test.jsonl"] {
            std::fs::write(text_dir.path().join(f), "{\"text\": \"Rain fell.\", \"mood\": \"q\"}\n").unwrap();
        }
        let (data, _) = open(
            text_dir.path(),
            &TextOptions {
                tasks: &tasks[1..],
                ..opts
            },
        )
        .unwrap();
        assert_eq!(values(&data.test.load(0).unwrap().labels[0]), vec![1]);
        let err = open(text_dir.path(), &opts).err().unwrap().to_string();
        assert!(err.contains("train.jsonl:1: token task 'pos' needs 'tokens'"), "{err}");

        // Truncation keeps the closing special token and is counted.
        let (data, stats) = open(dir.path(), &TextOptions { max_len: 3, ..opts }).unwrap();
        assert_eq!(
            (stats.truncated, stats.length),
            (4, 3),
            "every line is longer than 3 tokens"
        );
        let ids = values(&data.train.load(0).unwrap().inputs[0]);
        assert_eq!(ids[2], i64::from(tokenizer.token_to_id("[SEP]").unwrap()));
    }
}
