//! Hand-written CPU kernels and the rules that pick them, apart from what the ops mean. Each
//! path here computes what libtorch's plain call computes, up to float rounding (the tests below
//! compare them); which path runs is decided by the thresholds here, whose timings are in
//! `docs/performance.md`.

use super::arith::{conv_out, output_len, pair};
use tch::Tensor;

/// A convolution's geometry as libtorch takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvWindow {
    pub kernel: [i64; 2],
    pub stride: [i64; 2],
    pub padding: [i64; 2],
    pub dilation: [i64; 2],
    pub groups: i64,
}

/// A max-pool's geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolWindow {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub ceil_mode: bool,
}

/// A view of a contiguous CPU f32 tensor's values, checked: the tensor must be defined, on the
/// CPU, f32, contiguous and hold exactly `len` values. Every raw slice in this module comes from
/// here or from [`values_mut`].
fn values(t: &Tensor, len: usize) -> &[f32] {
    check_plain(t, len);
    if len == 0 {
        return &[];
    }
    // SAFETY: checked above: `t` owns `len` contiguous f32 values on the CPU, and the slice
    // borrows `t`, so the storage outlives it.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, len) }
}

/// [`values`], writable. Take it only of a tensor this module created and shares with nobody.
fn values_mut(t: &mut Tensor, len: usize) -> &mut [f32] {
    check_plain(t, len);
    if len == 0 {
        return &mut [];
    }
    // SAFETY: as in `values`; the exclusive borrow of `t` keeps other slices of it from this
    // module away for the slice's life, and the callers pass tensors they just allocated.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, len) }
}

fn check_plain(t: &Tensor, len: usize) {
    assert!(
        t.defined()
            && t.device() == tch::Device::Cpu
            && t.kind() == tch::Kind::Float
            && t.is_contiguous()
            && t.numel() == len,
        "kernel slice: expected a contiguous CPU f32 tensor of {len} values, got {:?} {:?} {:?}",
        t.size(),
        t.kind(),
        t.device()
    );
}

/// Max pooling, by the fastest path that applies: the two-pass pooling below for a CPU float
/// batch without gradient; with a gradient on the CPU, libtorch's pooling in channels-last order,
/// which it vectorises; else libtorch's own (timings in `docs/performance.md`).
pub fn max_pool2d(x: &Tensor, p: &PoolWindow) -> Tensor {
    let pool = |x: &Tensor| x.max_pool2d(pair(p.kernel), pair(p.stride), pair(p.padding), [1, 1], p.ceil_mode);
    let cpu_float = x.device() == tch::Device::Cpu && x.kind() == tch::Kind::Float;
    if cpu_float && x.dim() == 4 && !x.requires_grad() {
        separable_max_pool(x, p)
    } else if x.device() == tch::Device::Cpu && x.dim() == 4 && x.stride()[1] != 1 {
        pool(&channels_last(x)).contiguous()
    } else {
        pool(x)
    }
}

/// A convolution, with inference-time shortcuts that change no value beyond float rounding:
/// - on the CPU, for one image and no gradient: a 1x1 convolution is one matrix product (see
///   `pointwise_conv`), a small size-preserving one that halves the channels or more is one
///   product per kernel tap, added shifted (see `tap_products_conv`), and another small
///   size-preserving one is im2col plus one (see `im2col_conv`);
/// - on CPUs, libtorch runs a dilated convolution on a small input (under 20480 values, batch 1)
///   through its generic im2col path, slower than oneDNN, so the wide ones go to oneDNN
///   directly when no gradient is needed.
///
/// Kernel taps that only read padding are sliced off before this, by the graph pass
/// `passes::slice_dead_taps`. The timings behind each path and bound are in `docs/performance.md`.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, c: &ConvWindow) -> Tensor {
    let size = x.size();
    let (kernel, stride, padding) = (c.kernel, c.stride, c.padding);
    // A dilation means nothing along a one-tap dimension; dropping it keeps the fast paths open.
    let dilation: [i64; 2] = std::array::from_fn(|d| if kernel[d] == 1 { 1 } else { c.dilation[d] });
    let cpu_float = x.device() == tch::Device::Cpu && x.kind() == tch::Kind::Float;
    let grad = x.requires_grad() || weight.requires_grad() || bias.is_some_and(|b| b.requires_grad());
    let one_cpu_image = cpu_float && !grad && size[0] == 1 && c.groups == 1;
    if one_cpu_image && kernel == [1, 1] && stride == [1, 1] && padding == [0, 0] {
        return pointwise_conv(x, weight, bias);
    }
    let keeps_size = stride == [1, 1]
        && (0..2).all(|d| output_len(size[2 + d], kernel[d], 1, padding[d], dilation[d]) == size[2 + d]);
    let macs = weight.numel() as i64 * size[2] * size[3];
    let narrowing = 2 * weight.size()[0] <= size[1];
    // An empty tensor may have no data pointer to build a slice from: both paths need macs >= 1.
    if one_cpu_image && keeps_size && narrowing && (1..=TAP_PRODUCTS_MAX_MACS).contains(&macs) {
        return tap_products_conv(x, weight, bias, padding, dilation);
    }
    if one_cpu_image && keeps_size && (1..=IM2COL_MAX_MACS).contains(&macs) {
        return im2col_conv(x, weight, bias, padding, dilation);
    }
    if dilation != [1, 1] && !grad && cpu_float && onednn_available() {
        if let Ok(y) = x.f_mkldnn_convolution(weight, bias, padding, stride, dilation, c.groups) {
            return y;
        }
    }
    x.conv2d(weight, bias, stride, padding, dilation, c.groups)
}

/// The largest convolution, in multiply-accumulates, that runs fused with its ReLU on a GPU: above
/// it cuDNN picked a slower fused kernel than the two calls.
const CUDNN_FUSED_RELU_MAX_MACS: i64 = 32_000_000_000;

/// A convolution and the ReLU after it, when no gradient is needed (`None` otherwise: the caller
/// runs the two apart): on a GPU one cuDNN call;
/// elsewhere the ReLU runs in place on the convolution's fresh output.
pub fn conv2d_relu(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, c: &ConvWindow) -> Option<Tensor> {
    if x.requires_grad() || weight.requires_grad() || bias.is_some_and(|b| b.requires_grad()) {
        return None;
    }
    let size = x.size();
    let (kernel, stride, padding, dilation) = (c.kernel, c.stride, c.padding, c.dilation);
    let macs: i64 = weight.numel() as i64
        * size[0]
        * (0..2)
            .map(|d| output_len(size[2 + d], kernel[d], stride[d], padding[d], dilation[d]))
            .product::<i64>();
    if x.device().is_cuda() && macs <= CUDNN_FUSED_RELU_MAX_MACS {
        if let Ok(y) = x.f_cudnn_convolution_relu(&weight.contiguous(), bias, stride, padding, dilation, c.groups) {
            return Some(y);
        }
    }
    let mut y = conv2d(x, weight, bias, c);
    let _ = y.relu_();
    Some(y)
}

/// A 1x1 convolution of one image as one matrix product, [O, C] x [C, H*W]. libtorch sends a 1x1
/// convolution with over 20480 input values to oneDNN, whose per-call cost is 3-5x that of the
/// product here.
fn pointwise_conv(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let size = x.size();
    let (channels, height, width) = (size[1], size[2], size[3]);
    weights_times_columns(weight, &x.reshape([channels, height * width]), bias, [height, width])
}

/// A convolution of one image from its columns [K, H*W] (one row per input value a weight reads):
/// the weights as a matrix [O, K] times the columns, plus the bias, viewed as [1, O, H, W].
fn weights_times_columns(
    weight: &Tensor,
    columns: &Tensor,
    bias: Option<&Tensor>,
    [height, width]: [i64; 2],
) -> Tensor {
    let outputs = weight.size()[0];
    let matrix = weight.reshape([outputs, columns.size()[0]]);
    let y = match bias {
        Some(b) => b.reshape([outputs, 1]).addmm(&matrix, columns),
        None => matrix.mm(columns),
    };
    y.view([1, outputs, height, width])
}

/// The largest convolution, in multiply-accumulates, that `im2col_conv` runs: the product wins on
/// small layers and loses on wide ones, where oneDNN's skipping of taps that read padding pays.
const IM2COL_MAX_MACS: i64 = 9_000_000;

/// A size-preserving, stride-1 convolution of one image as im2col and one matrix product,
/// [O, C*kh*kw] x [C*kh*kw, H*W]. oneDNN's fixed cost per call (reorders of input, weights and
/// result) dominates the small layers of a pruned model; the columns take one block copy per
/// kernel tap and channel.
fn im2col_conv(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, padding: [i64; 2], dilation: [i64; 2]) -> Tensor {
    let x = x.contiguous();
    let size = x.size();
    let (channels, height, width) = (size[1], size[2], size[3]);
    let weight_size = weight.size();
    let kernel = [weight_size[2], weight_size[3]];
    let rows = channels * kernel[0] * kernel[1];
    let mut columns = Tensor::empty([rows, height * width], (tch::Kind::Float, tch::Device::Cpu));
    let image = values(&x, (channels * height * width) as usize);
    let dst = values_mut(&mut columns, (rows * height * width) as usize);
    fill_columns(image, dst, [height as usize, width as usize], kernel, padding, dilation);
    weights_times_columns(weight, &columns, bias, [height, width])
}

/// The largest convolution, in multiply-accumulates, that `tap_products_conv` runs: above about
/// 20 M oneDNN won.
const TAP_PRODUCTS_MAX_MACS: i64 = 10_000_000;

/// A size-preserving, stride-1 convolution of one image with at most half as many output channels
/// as input ones, as one matrix product of the weights of every kernel tap, stacked, with the image,
/// [taps*O, C] x [C, H*W], whose per-tap planes are then added into the output, each shifted by its
/// tap's offset. It moves taps*O*H*W values where im2col moves taps*C*H*W.
fn tap_products_conv(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    padding: [i64; 2],
    dilation: [i64; 2],
) -> Tensor {
    let x = x.contiguous();
    let size = x.size();
    let (channels, height, width) = (size[1], size[2], size[3]);
    let weight_size = weight.size();
    let (outputs, kernel) = (weight_size[0], [weight_size[2], weight_size[3]]);
    let taps = kernel[0] * kernel[1];
    let plane = height * width;
    let stacked = weight
        .permute([2, 3, 0, 1])
        .contiguous()
        .view([taps * outputs, channels]);
    let products = stacked.mm(&x.view([channels, plane]));
    let mut out = Tensor::empty([outputs, plane], (tch::Kind::Float, tch::Device::Cpu));
    let bias = bias.map(|b| b.contiguous());
    let products_values = values(&products, (taps * outputs * plane) as usize);
    let bias_values = bias.as_ref().map(|b| values(b, outputs as usize));
    let out_values = values_mut(&mut out, (outputs * plane) as usize);
    add_shifted_taps(
        products_values,
        out_values,
        bias_values,
        [height as usize, width as usize],
        kernel,
        padding,
        dilation,
    );
    out.view([1, outputs, height, width])
}

/// Writes into `out` ([O, H*W]) the bias plus, for every kernel tap (i, j), its product plane
/// (row block i*kw+j of `products`, [O, H*W] each) shifted by the tap's offset: output (y, x)
/// takes the product at (y + dy, x + dx) where that lies in the image, and nothing elsewhere.
fn add_shifted_taps(
    products: &[f32],
    out: &mut [f32],
    bias: Option<&[f32]>,
    [h, w]: [usize; 2],
    kernel: [i64; 2],
    padding: [i64; 2],
    dilation: [i64; 2],
) {
    let plane_len = h * w;
    for (o, plane) in out.chunks_exact_mut(plane_len).enumerate() {
        plane.fill(bias.map_or(0.0, |b| b[o]));
    }
    let outputs = out.len() / plane_len;
    let (hi, wi) = (h as i64, w as i64);
    for i in 0..kernel[0] {
        let dy = i * dilation[0] - padding[0];
        for j in 0..kernel[1] {
            let dx = j * dilation[1] - padding[1];
            let tap = (i * kernel[1] + j) as usize;
            // Output rows [y0, y1) and columns [x0, x1) read a product inside the image.
            let (y0, y1) = ((-dy).clamp(0, hi), (hi - dy).clamp(0, hi));
            let (x0, x1) = ((-dx).clamp(0, wi), (wi - dx).clamp(0, wi));
            if y0 >= y1 || x0 >= x1 {
                continue;
            }
            let (y0, y1, x0, x1) = (y0 as usize, y1 as usize, x0 as usize, x1 as usize);
            let products = &products[tap * outputs * plane_len..(tap + 1) * outputs * plane_len];
            for (plane, source) in out.chunks_exact_mut(plane_len).zip(products.chunks_exact(plane_len)) {
                for y in y0..y1 {
                    let from = ((y as i64 + dy) * wi + x0 as i64 + dx) as usize;
                    let row = &mut plane[y * w + x0..y * w + x1];
                    for (a, b) in row.iter_mut().zip(&source[from..from + (x1 - x0)]) {
                        *a += b;
                    }
                }
            }
        }
    }
}

/// Writes the im2col matrix of a size-preserving, stride-1 convolution: row (c, i, j) holds, for
/// every output position, the input value that tap (i, j) of channel c reads, or 0 in the padding.
/// Tap (i, j) reads the plane shifted by (dy, dx), so its valid rows are one block copy of the
/// plane; the `|dx|` columns per row that the copy wraps across row ends are zeroed after it.
fn fill_columns(
    image: &[f32],
    columns: &mut [f32],
    [h, w]: [usize; 2],
    kernel: [i64; 2],
    padding: [i64; 2],
    dilation: [i64; 2],
) {
    let plane_len = h * w;
    let (hi, wi) = (h as i64, w as i64);
    let mut rows = columns.chunks_exact_mut(plane_len);
    for plane in image.chunks_exact(plane_len) {
        for i in 0..kernel[0] {
            let dy = i * dilation[0] - padding[0];
            for j in 0..kernel[1] {
                let dx = j * dilation[1] - padding[1];
                let out = rows.next().expect("one row per channel and tap");
                // Output rows whose input row exists: [y0, y1).
                let y0 = (-dy).clamp(0, hi);
                let y1 = (hi - dy).clamp(y0, hi);
                if y0 == y1 || dx.abs() >= wi {
                    out.fill(0.0);
                    continue;
                }
                let (y0, y1) = (y0 as usize, y1 as usize);
                out[..y0 * w].fill(0.0);
                out[y1 * w..].fill(0.0);
                let first = (y0 * w) as i64 + (-dx).max(0);
                let last = (y1 * w) as i64 - dx.max(0);
                let shift = dy * wi + dx;
                out[first as usize..last as usize]
                    .copy_from_slice(&plane[(first + shift) as usize..(last + shift) as usize]);
                let wrapped = if dx > 0 { w - dx as usize..w } else { 0..(-dx) as usize };
                for y in y0..y1 {
                    out[y * w + wrapped.start..y * w + wrapped.end].fill(0.0);
                }
            }
        }
    }
}

/// Max-pooling of a CPU float tensor ([N, C, H, W], no gradient) in two passes over plain
/// slices: down the columns (whole rows at a time, which vectorises), then across the pooled rows
/// (a max over a rectangle is the max of its columns' maxima), faster than libtorch's pooling in
/// either layout. A NaN in a window gives NaN, as libtorch's does.
fn separable_max_pool(x: &Tensor, p: &PoolWindow) -> Tensor {
    let x = x.contiguous();
    let size = x.size();
    let (planes, h, w) = ((size[0] * size[1]) as usize, size[2] as usize, size[3] as usize);
    let out_h = pool_len(h, p.kernel[0], p.stride[0], p.padding[0], p.ceil_mode);
    let out_w = pool_len(w, p.kernel[1], p.stride[1], p.padding[1], p.ceil_mode);
    let mut out = Tensor::empty(
        [size[0], size[1], out_h as i64, out_w as i64],
        (tch::Kind::Float, tch::Device::Cpu),
    );
    if planes * out_h * out_w == 0 {
        return out;
    }
    let input = values(&x, planes * h * w);
    let output = values_mut(&mut out, planes * out_h * out_w);
    // The input range [first, end) that output position i's window covers along one dimension.
    let window = |i: usize, k: usize, s: usize, pad: usize, len: usize| {
        let start = (i * s) as i64 - pad as i64;
        (
            start.max(0) as usize,
            ((start + k as i64).min(len as i64)).max(0) as usize,
        )
    };
    let column_windows: Vec<_> = (0..out_w)
        .map(|j| window(j, p.kernel[1], p.stride[1], p.padding[1], w))
        .collect();
    let mut column_maxima = vec![0f32; w];
    for (plane, pooled) in input.chunks_exact(h * w).zip(output.chunks_exact_mut(out_h * out_w)) {
        for (i, out_row) in pooled.chunks_exact_mut(out_w).enumerate() {
            let (first, end) = window(i, p.kernel[0], p.stride[0], p.padding[0], h);
            column_maxima.fill(f32::NEG_INFINITY);
            for row in plane[first * w..end * w].chunks_exact(w) {
                for (m, &v) in column_maxima.iter_mut().zip(row) {
                    *m = nan_max(*m, v);
                }
            }
            for (o, &(first, end)) in out_row.iter_mut().zip(&column_windows) {
                *o = column_maxima[first..end]
                    .iter()
                    .fold(f32::NEG_INFINITY, |a, &b| nan_max(a, b));
            }
        }
    }
    out
}

/// The larger of two floats, or NaN when either is NaN (f32::max would drop the NaN).
#[inline(always)]
fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() | (a > b) {
        a
    } else {
        b
    }
}

/// Output length of a max-pool along one dimension (see [`conv_out`]); 0 where the
/// window is larger than the padded input.
fn pool_len(input: usize, kernel: usize, stride: usize, padding: usize, ceil_mode: bool) -> usize {
    conv_out(input, kernel, stride, padding, 1, ceil_mode).unwrap_or(0)
}

/// Scaled dot-product attention of q, k, v [N, heads, L, d] where `keep` [N, 1, 1, L] is true:
/// for one sequence on the CPU without gradient, a matrix product, softmax and product (faster
/// than libtorch's fused kernel at batch 1); otherwise the fused kernel (faster at larger
/// batches). Without padding no mask is applied at all. A query whose keys are all masked attends
/// uniformly, as in Hugging Face's models.
/// Timings in `docs/performance.md`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, keep: &Tensor, scale: f64) -> anyhow::Result<Tensor> {
    let grad = q.requires_grad() || k.requires_grad() || v.requires_grad();
    // A batch without padding (always so for one sequence on its own) needs no mask, and runs
    // faster without one.
    let masked = keep.logical_not();
    let padded = masked.any().int64_value(&[]) != 0;
    if q.size()[0] == 1 && q.device() == tch::Device::Cpu && !grad {
        let mut scores = q.f_matmul(&k.transpose(-1, -2))? * scale;
        if padded {
            let _ = scores.masked_fill_(&masked, f64::from(f32::MIN));
        }
        return Ok(scores.softmax(-1, scores.kind()).f_matmul(v)?);
    }
    let mask = padded.then_some(keep);
    Ok(Tensor::f_scaled_dot_product_attention(
        q, k, v, mask, 0.0, false, scale, false,
    )?)
}

/// Whether this libtorch was built with oneDNN (MKL-DNN); asked once.
fn onednn_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let _guard = tch::no_grad_guard();
        let x = Tensor::ones([1, 1, 3, 3], (tch::Kind::Float, tch::Device::Cpu));
        x.f_mkldnn_convolution(&x, None::<Tensor>, [2, 2], [1, 1], [2, 2], 1)
            .is_ok()
    })
}

/// The same values in channels-last (NHWC) memory order; other than 4-d tensors are returned as they
/// are. Every op accepts either layout; the fast convolution kernels on GPUs want this one.
pub fn channels_last(t: &Tensor) -> Tensor {
    if t.dim() == 4 {
        t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
    } else {
        t.shallow_clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// The batch-1 path and libtorch's fused kernel agree, with padding masked and without
    /// padding (where no mask is applied), at batch 1 and 2.
    #[test]
    fn attention_paths_agree() {
        tch::manual_seed(4);
        for batch in [1, 2] {
            let t = || Tensor::randn([batch, 3, 5, 4], (Kind::Float, Device::Cpu));
            let (q, k, v) = (t(), t(), t());
            for real in [3, 5] {
                let keep = Tensor::arange(5, (Kind::Int64, Device::Cpu))
                    .lt(real)
                    .view([1, 1, 1, 5])
                    .expand([batch, 1, 1, 5], false);
                let ours = tch::no_grad(|| attention(&q, &k, &v, &keep, 0.5).unwrap());
                let fused = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(&keep), 0.0, false, 0.5, false);
                let diff = (&ours - &fused).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "batch {batch}, {real} real keys: {diff}");
            }
        }
    }

    /// A square-kernel convolution of one group on tensors "w" (and "b" when `bias`).
    fn conv_spec(
        bias: bool,
        [inputs, outputs]: [usize; 2],
        kernel: usize,
        stride: usize,
        padding: [usize; 2],
        dilation: [usize; 2],
    ) -> crate::graph::Conv2d {
        crate::graph::Conv2d {
            weight: "w".into(),
            bias: bias.then(|| "b".into()),
            in_channels: inputs,
            out_channels: outputs,
            kernel: [kernel, kernel],
            stride: [stride, stride],
            padding,
            dilation,
            groups: 1,
            relu: false,
            live_taps: None,
        }
    }

    /// An input, weights and a bias of normal random values, from `seed`.
    fn random_conv_inputs(seed: i64, input: [i64; 4], weight: [i64; 4]) -> (Tensor, Tensor, Tensor) {
        tch::manual_seed(seed);
        let float = (Kind::Float, Device::Cpu);
        (
            Tensor::randn(input, float),
            Tensor::randn(weight, float),
            Tensor::randn([weight[0]], float),
        )
    }

    /// The interpreter's convolution (dead taps sliced off; without gradients, im2col for these
    /// small size-preserving ones and oneDNN for the strided dilated ones) against libtorch's plain
    /// one, with and without gradients, over dilations that kill taps.
    #[test]
    fn convolution_shortcuts_change_no_value() {
        let (x, w, b) = random_conv_inputs(3, [1, 8, 5, 7], [6, 8, 3, 3]);
        for (stride, dilation) in [
            (1, [1, 1]),
            (1, [2, 3]),
            (1, [6, 6]),
            (1, [9, 2]),
            (2, [4, 1]),
            (2, [7, 7]),
        ] {
            let c = conv_spec(true, [8, 6], 3, stride, dilation, dilation);
            let plain = x.conv2d(&w, Some(&b), pair(c.stride), pair(c.padding), pair(c.dilation), 1);
            let fast = tch::no_grad(|| conv2d(&x, &w, Some(&b), &c.window()));
            assert_eq!(fast.size(), plain.size(), "dilation {dilation:?}");
            let diff = (&fast - &plain).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "stride {stride} dilation {dilation:?}: differs by {diff}");

            // With gradients: the same values, and dead taps get the zero gradient they have.
            let wg = w.copy().set_requires_grad(true);
            conv2d(&x, &wg, Some(&b), &c.window()).sum(Kind::Float).backward();
            let wp = w.copy().set_requires_grad(true);
            x.conv2d(&wp, Some(&b), pair(c.stride), pair(c.padding), pair(c.dilation), 1)
                .sum(Kind::Float)
                .backward();
            let diff = (wg.grad() - wp.grad()).abs().max().double_value(&[]);
            assert!(
                diff < 1e-4,
                "stride {stride} dilation {dilation:?}: gradients differ by {diff}"
            );
        }
    }

    /// 1x1 convolutions of one image run as a matrix product: with and without a bias, on a
    /// contiguous and on a channels-last input, over the 20480 input values where libtorch would
    /// have chosen oneDNN.
    #[test]
    fn pointwise_convolution_as_matrix_product() {
        let (x, w, b) = random_conv_inputs(4, [1, 96, 13, 17], [48, 96, 1, 1]);
        for (input, bias) in [(x.shallow_clone(), Some(&b)), (channels_last(&x), None)] {
            let c = conv_spec(bias.is_some(), [96, 48], 1, 1, [0, 0], [1, 1]);
            let plain = input.conv2d(&w, bias, [1, 1], [0, 0], [1, 1], 1);
            let fast = tch::no_grad(|| conv2d(&input, &w, bias, &c.window()));
            assert_eq!(fast.size(), [1, 48, 13, 17]);
            let diff = (&fast - &plain).abs().max().double_value(&[]);
            assert!(diff < 1e-4, "bias {}: differs by {diff}", bias.is_some());
        }
    }

    /// Columns of a 2x3 image for a 3x3 kernel with padding 1, by hand: tap (0, 0) reads the
    /// pixel up and to the left, tap (2, 2) the one down and to the right, tap (1, 1) the pixel.
    #[test]
    fn im2col_columns_by_hand() {
        let image = [1., 2., 3., 4., 5., 6.];
        let mut columns = [f32::NAN; 9 * 6];
        fill_columns(&image, &mut columns, [2, 3], [3, 3], [1, 1], [1, 1]);
        let row = |tap: usize| &columns[tap * 6..(tap + 1) * 6];
        assert_eq!(row(0), [0., 0., 0., 0., 1., 2.]);
        assert_eq!(row(4), image);
        assert_eq!(row(8), [5., 6., 0., 0., 0., 0.]);
        assert_eq!(row(2), [0., 0., 0., 2., 3., 0.]);
        assert_eq!(row(6), [0., 4., 5., 0., 0., 0.]);
    }

    /// Tap products of a 2x3 image for a 3x3 kernel with padding 1, by hand: one output channel,
    /// bias 10, each tap's product plane filled with its tap number. Output (0, 0) reads taps 4
    /// (itself), 5 (right), 7 (below) and 8 (below right); output (1, 1) every tap but the row below.
    #[test]
    fn tap_products_by_hand() {
        let products: Vec<f32> = (0..9).flat_map(|tap| [tap as f32; 6]).collect();
        let mut out = [f32::NAN; 6];
        add_shifted_taps(&products, &mut out, Some(&[10.0]), [2, 3], [3, 3], [1, 1], [1, 1]);
        assert_eq!(out[0], 10.0 + 4.0 + 5.0 + 7.0 + 8.0);
        assert_eq!(out[4], 10.0 + (0..6).sum::<i32>() as f32);
        assert_eq!(out[5], 10.0 + 0.0 + 1.0 + 3.0 + 4.0);
        let mut no_bias = [f32::NAN; 6];
        add_shifted_taps(&products, &mut no_bias, None, [2, 3], [3, 3], [1, 1], [1, 1]);
        assert_eq!(no_bias[0], 4.0 + 5.0 + 7.0 + 8.0);
    }

    /// Small size-preserving convolutions of one image as im2col plus a matrix product, against
    /// libtorch's: square and uneven dilations, taps that read only padding (dilation past the
    /// image), a 5x5 kernel, a channels-last input and a non-contiguous (sliced) weight.
    #[test]
    fn im2col_convolution_matches_libtorch() {
        let (x, w, b) = random_conv_inputs(5, [1, 24, 13, 17], [40, 24, 5, 5]);
        let w3 = w.narrow(2, 1, 3).narrow(3, 1, 3);
        assert!(!w3.is_contiguous());
        for (input, weight, dilation, bias) in [
            (x.shallow_clone(), w3.contiguous(), [1, 1], Some(&b)),
            (x.shallow_clone(), w3.shallow_clone(), [2, 3], None),
            (channels_last(&x), w3.contiguous(), [4, 12], Some(&b)),
            (x.shallow_clone(), w3.contiguous(), [13, 20], Some(&b)),
            (x.shallow_clone(), w.shallow_clone(), [1, 1], Some(&b)),
        ] {
            let kernel = weight.size()[2];
            let padding = [dilation[0] * (kernel - 1) / 2, dilation[1] * (kernel - 1) / 2];
            let plain = input.conv2d(&weight, bias, [1, 1], padding, dilation, 1);
            for (path, fast) in [
                (
                    "im2col",
                    tch::no_grad(|| im2col_conv(&input, &weight, bias, padding, dilation)),
                ),
                (
                    "tap products",
                    tch::no_grad(|| tap_products_conv(&input, &weight, bias, padding, dilation)),
                ),
            ] {
                assert_eq!(fast.size(), [1, 40, 13, 17]);
                // Relative to the largest output: a 5x5 kernel sums 600 products, and the two paths
                // add them in different orders (1.2e-4 apart at outputs near 90 on an AVX2 CPU).
                let diff = (&fast - &plain).abs().max().double_value(&[]);
                let scale = plain.abs().max().double_value(&[]);
                assert!(
                    diff < 1e-5 * scale,
                    "{path}: kernel {kernel} dilation {dilation:?}: differs by {diff} (largest output {scale})"
                );
            }
        }
    }

    #[test]
    fn max_pool_keeps_values_and_layout() {
        let p = PoolWindow {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
            ceil_mode: false,
        };
        let x = Tensor::randn([2, 5, 9, 11], (Kind::Float, Device::Cpu));
        let y = max_pool2d(&x, &p);
        let plain = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        assert!(y.equal(&plain));
        assert!(y.is_contiguous(), "the next node gets the layout it got before");
    }

    /// The two-pass pooling against libtorch's: even and odd sizes, ceil mode (whose last window
    /// may hang over the edge), uneven kernels and strides, no padding, a channels-last input,
    /// and NaN, which wins its windows.
    #[test]
    fn separable_max_pool_matches_libtorch() {
        let x = Tensor::randn([2, 3, 48, 64], (Kind::Float, Device::Cpu));
        let _ = x.narrow(2, 3, 1).narrow(3, 7, 1).fill_(f64::NAN);
        for (input, kernel, stride, padding, ceil_mode) in [
            (x.shallow_clone(), [3, 3], [2, 2], [1, 1], true),
            (x.shallow_clone(), [3, 3], [2, 2], [1, 1], false),
            (x.narrow(2, 0, 47).narrow(3, 0, 63), [3, 3], [2, 2], [1, 1], true),
            (x.narrow(2, 0, 47).narrow(3, 0, 62), [2, 3], [2, 3], [0, 1], true),
            (channels_last(&x), [3, 2], [1, 2], [1, 0], false),
            (x.narrow(2, 0, 5), [5, 5], [3, 3], [2, 2], true),
            (x.narrow(2, 0, 5).narrow(3, 0, 5), [2, 2], [2, 2], [1, 1], true),
        ] {
            let p = PoolWindow {
                kernel,
                stride,
                padding,
                ceil_mode,
            };
            let ours = separable_max_pool(&input, &p);
            let theirs = input.max_pool2d(pair(kernel), pair(stride), pair(padding), [1, 1], ceil_mode);
            assert_eq!(ours.size(), theirs.size(), "{p:?}");
            // NaN != NaN, so compare NaN positions, then the rest.
            assert!(
                ours.isnan().equal(&theirs.isnan()),
                "{p:?}: NaN where libtorch has none"
            );
            if input.isnan().any().int64_value(&[]) == 1 {
                assert!(ours.isnan().any().int64_value(&[]) == 1, "{p:?}: the NaN was lost");
            }
            let (ours, theirs) = (ours.nan_to_num(0.0, None, None), theirs.nan_to_num(0.0, None, None));
            assert!(ours.equal(&theirs), "{p:?}");
        }
    }

    /// Pool lengths by hand: 48 rows, window 3, stride 2, padding 1 give 24 windows, or 25 in ceil
    /// mode (the 25th starts at padded row 48, image row 47); 47 rows give 24 either way (the
    /// windows tile the padded rows exactly). 5 rows, window 2, stride 2, padding 1, ceil mode:
    /// rounding up gives a 4th window, but it would start at padded row 6, in the right padding,
    /// so it is dropped.
    #[test]
    fn pool_lengths_by_hand() {
        assert_eq!(pool_len(48, 3, 2, 1, false), 24);
        assert_eq!(pool_len(48, 3, 2, 1, true), 25);
        assert_eq!(pool_len(47, 3, 2, 1, false), 24);
        assert_eq!(pool_len(47, 3, 2, 1, true), 24);
        assert_eq!(pool_len(5, 2, 2, 1, true), 3);
        assert_eq!(pool_len(2, 3, 1, 0, true), 0);
    }
}
