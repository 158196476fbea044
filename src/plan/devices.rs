//! The devices file of `cut plan`: one entry per edge device.
//!
//! ```json
//! {"devices": [
//!   {"name": "phone-1", "flops": 1.2e12, "memory": "6G", "snr_db": 12, "samples": 64},
//!   {"name": "board-1", "flops": 5.3e12, "memory": 8000000000, "spectral_efficiency": 5.2}
//! ]}
//! ```
//!
//! `flops` is sustained FLOP/s in fine-tuning arithmetic (or `speed`, a multiple of this machine
//! as `cut plan --measure` measures it); `memory` bytes (suffixes k, M, G are
//! powers of 1000); the uplink as `spectral_efficiency` (bit/s/Hz) or `snr_db` (Shannon:
//! log2(1 + SNR)); `samples` per round (default: the plan's `--samples`).

use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::path::Path;

#[derive(Clone, Debug, Serialize)]
pub struct Device {
    pub name: String,
    /// Sustained FLOP/s (with `speed`, filled in by `cut plan --measure`).
    pub flops: f64,
    /// A multiple of this machine's measured speed, instead of `flops`.
    pub speed: Option<f64>,
    pub memory: u64,
    /// bit/s per Hz.
    pub efficiency: f64,
    pub samples: usize,
}

fn count(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => {
            let s = s.trim();
            let (num, mult) = match s.chars().last() {
                Some('k' | 'K') => (&s[..s.len() - 1], 1e3),
                Some('M') => (&s[..s.len() - 1], 1e6),
                Some('G') => (&s[..s.len() - 1], 1e9),
                Some('T') => (&s[..s.len() - 1], 1e12),
                _ => (s, 1.0),
            };
            num.trim().parse::<f64>().ok().map(|v| v * mult)
        }
        _ => None,
    }
}

/// The range each field must lie in: wide enough for any real device and link, narrow enough
/// that every time the plan computes is a finite number of seconds.
const RANGES: [(&str, f64, f64, &str); 6] = [
    ("flops", 1e6, 1e18, "FLOP/s"),
    ("speed", 1e-6, 1e6, "times this machine"),
    ("memory", 1e6, 1e15, "bytes"),
    ("spectral_efficiency", 1e-3, 100.0, "bit/s/Hz"),
    ("snr_db", -30.0, 100.0, "dB"),
    ("samples", 1.0, 1e9, "samples per round"),
];

/// `x` for field `key`, refused outside its range (and, for samples, when not a whole number).
fn in_range(key: &str, x: f64) -> Result<f64> {
    let (_, lo, hi, unit) = RANGES.iter().find(|r| r.0 == key).expect("every field has a range");
    if !(x.is_finite() && (*lo..=*hi).contains(&x)) {
        let shown = if x == 0.0 || (1e-3..1e9).contains(&x.abs()) {
            format!("{x}")
        } else {
            format!("{x:e}")
        };
        bail!("\"{key}\" is {shown}, outside {lo:e} to {hi:e} {unit}");
    }
    if key == "samples" && x.fract() != 0.0 {
        bail!("\"samples\" is {x}, not a whole number");
    }
    Ok(x)
}

/// Reads a devices file; `samples` fills entries that give none.
pub fn read(path: &Path, samples: usize) -> Result<Vec<Device>> {
    check_samples(samples)?;
    let text = crate::fsio::read_input_text(path, crate::fsio::limit::JSON, "the devices file")?;
    parse(&text, samples).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// `--samples`, the default of entries that give none (a command-line error, named as such).
fn check_samples(samples: usize) -> Result<()> {
    if samples == 0 {
        crate::usage_bail!("--samples 0: each device fine-tunes on at least 1 sample per round");
    }
    Ok(())
}

pub fn parse(text: &str, samples: usize) -> Result<Vec<Device>> {
    check_samples(samples)?;
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| anyhow!("not JSON ({e})"))?;
    let Some(list) = doc.get("devices").and_then(|d| d.as_array()) else {
        bail!("no \"devices\" list");
    };
    if list.is_empty() {
        bail!("the \"devices\" list is empty");
    }
    let mut out = Vec::new();
    for (i, d) in list.iter().enumerate() {
        let name = d
            .get("name")
            .and_then(|n| n.as_str())
            .map(String::from)
            .unwrap_or_else(|| format!("device{i}"));
        let field = |key: &str| -> Result<f64> {
            let v = d
                .get(key)
                .ok_or_else(|| anyhow!("devices[{i}] ({name}): no \"{key}\""))?;
            let x = count(v).ok_or_else(|| anyhow!("devices[{i}] ({name}): \"{key}\" is not a number"))?;
            in_range(key, x).map_err(|e| anyhow!("devices[{i}] ({name}): {e}"))
        };
        let efficiency = match (d.get("spectral_efficiency"), d.get("snr_db")) {
            (Some(_), _) => field("spectral_efficiency")?,
            (None, Some(v)) => {
                let db = v
                    .as_f64()
                    .ok_or_else(|| anyhow!("devices[{i}] ({name}): \"snr_db\" is not a number"))?;
                let db = in_range("snr_db", db).map_err(|e| anyhow!("devices[{i}] ({name}): {e}"))?;
                (1.0 + 10f64.powf(db / 10.0)).log2()
            }
            (None, None) => bail!("devices[{i}] ({name}): give \"spectral_efficiency\" or \"snr_db\""),
        };
        let samples = match d.get("samples") {
            Some(_) => field("samples")? as usize,
            None => samples,
        };
        let speed = match (d.get("flops"), d.get("speed")) {
            (Some(_), _) => None,
            (None, Some(_)) => Some(field("speed")?),
            (None, None) => bail!(
                "devices[{i}] ({name}): give \"flops\" (FLOP/s) or \"speed\" (times this machine, with --measure)"
            ),
        };
        out.push(Device {
            flops: if speed.is_some() { 0.0 } else { field("flops")? },
            speed,
            memory: field("memory")? as u64,
            efficiency,
            samples,
            name,
        });
    }
    Ok(out)
}
