//! Plain-text tables and human-readable numbers.

/// 1234567 -> "1.23 M".
pub fn count(n: f64) -> String {
    let a = n.abs();
    if a >= 1e9 {
        format!("{:.2} G", n / 1e9)
    } else if a >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else if a >= 1e3 {
        format!("{:.1} k", n / 1e3)
    } else {
        format!("{n}")
    }
}

/// A MAC count, or "overflow" where it saturated (sizes so large the count passes 2^64).
pub fn macs(n: u64) -> String {
    if n == u64::MAX {
        "overflow".into()
    } else {
        count(n as f64)
    }
}

/// Serialises a saturated MAC count as the string "overflow" instead of 2^64 - 1.
pub fn serialize_macs<S: serde::Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
    if *n == u64::MAX {
        s.serialize_str("overflow")
    } else {
        s.serialize_u64(*n)
    }
}

/// Bytes in MB (10^6) or kB.
pub fn bytes(n: f64) -> String {
    if n.abs() >= 1e6 {
        format!("{:.2} MB", n / 1e6)
    } else if n.abs() >= 1e3 {
        format!("{:.1} kB", n / 1e3)
    } else {
        format!("{n} B")
    }
}

pub fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// Left-aligns the first column and right-aligns the rest.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i == 0 {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            } else {
                out.push_str("  ");
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// "seg agreement 0.9312, kl 0.0412; depth relative_l2 0.1021, cosine 0.9940".
pub fn fidelity_phrase(fidelity: &[crate::metrics::TaskMetrics]) -> String {
    fidelity
        .iter()
        .map(|t| {
            let values: Vec<String> = t.metrics.iter().map(|m| format!("{} {}", m.name, m.shown())).collect();
            format!("{} {}", t.task, values.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}
