//! Window arithmetic shared by shape inference and the kernels.

use anyhow::{bail, Result};

/// Output length along one dimension, as libtorch computes it: with `ceil`, a last window that
/// would start in the right padding is dropped.
pub fn conv_out(
    size: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    ceil: bool,
) -> Result<usize> {
    let span = dilation * (kernel - 1) + 1;
    let padded = size + 2 * padding;
    if padded < span {
        bail!("input of size {size} is smaller than the kernel span {span}");
    }
    let numer = padded - span;
    let mut out = if ceil { numer.div_ceil(stride) } else { numer / stride } + 1;
    // PyTorch: with ceil_mode the last window must start inside the input or left padding.
    if ceil && (out - 1) * stride >= size + padding {
        out -= 1;
    }
    Ok(out)
}

/// `[usize; 2]` as libtorch's `[i64; 2]`.
pub fn pair(v: [usize; 2]) -> [i64; 2] {
    [v[0] as i64, v[1] as i64]
}

/// A convolution's output length along one dimension, in libtorch's signed arithmetic (zero or
/// negative when the kernel span exceeds the padded input).
pub fn output_len(input: i64, kernel: i64, stride: i64, padding: i64, dilation: i64) -> i64 {
    (input + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1
}
