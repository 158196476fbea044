//! The bytes a split sends per inference: the crossing tensor of one sample in the wire format,
//! headerless (both sides know the shape), row-major, little-endian:
//! - `f32`: 4 bytes a value; `f16`: 2;
//! - `int8`: 1 byte a value, then the f32 scales (one, or one per channel);
//! - a text sample's token count as a u16 after them, from which the cloud rebuilds the attention
//!   mask (all ones at batch 1).
//!
//! And what cloud-only sends instead: the image as PNG, the text as token ids.

use crate::graph::ops::{channel_axis, dequantize_int8, quantize_int8, ScaleGranularity, WireFormat};
use anyhow::{bail, Result};
use image::ImageEncoder;
use tch::{Kind, Tensor};

/// One sample's tensor (shape [1, ...]) as sent.
pub fn encode(x: &Tensor, wire: WireFormat, scale: ScaleGranularity, tokens: Option<usize>) -> Result<Vec<u8>> {
    if x.size().first() != Some(&1) {
        bail!("a payload holds one sample, not a batch of {:?}", x.size());
    }
    let mut out = Vec::new();
    match wire {
        WireFormat::F32 => {
            let v = Vec::<f32>::try_from(x.to_kind(Kind::Float).flatten(0, -1))?;
            v.iter().for_each(|f| out.extend_from_slice(&f.to_le_bytes()));
        }
        WireFormat::F16 => {
            let v = Vec::<half::f16>::try_from(x.to_kind(Kind::Half).flatten(0, -1))?;
            v.iter().for_each(|f| out.extend_from_slice(&f.to_le_bytes()));
        }
        WireFormat::Int8 => {
            let (q, s) = quantize_int8(x, scale);
            let q = Vec::<i8>::try_from(q.flatten(0, -1))?;
            out.extend(q.iter().map(|&b| b as u8));
            let s = Vec::<f32>::try_from(s.flatten(0, -1))?;
            s.iter().for_each(|f| out.extend_from_slice(&f.to_le_bytes()));
        }
    }
    if let Some(n) = tokens {
        let n = u16::try_from(n).map_err(|_| anyhow::anyhow!("{n} tokens do not fit the payload's u16 count"))?;
        out.extend_from_slice(&n.to_le_bytes());
    }
    Ok(out)
}

/// The f32 tensor of `shape` (batch 1 first) and the token count a payload holds.
pub fn decode(
    bytes: &[u8],
    shape: &[i64],
    wire: WireFormat,
    scale: ScaleGranularity,
    text: bool,
) -> Result<(Tensor, Option<usize>)> {
    let numel: i64 = shape.iter().product();
    let n = numel as usize;
    let channels = match scale {
        ScaleGranularity::Tensor => 1,
        ScaleGranularity::Channel => shape[channel_axis(shape.len()) as usize] as usize,
    };
    let body = match wire {
        WireFormat::F32 => 4 * n,
        WireFormat::F16 => 2 * n,
        WireFormat::Int8 => n + 4 * channels,
    };
    let expected = body + if text { 2 } else { 0 };
    if bytes.len() != expected {
        bail!(
            "a payload of {} bytes, expected {expected} for {shape:?} in {}",
            bytes.len(),
            wire.as_str()
        );
    }
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let x = match wire {
        WireFormat::F32 => Tensor::from_slice(&f32s(&bytes[..body])).view(shape),
        WireFormat::F16 => {
            let v: Vec<half::f16> = bytes[..body]
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
                .collect();
            Tensor::from_slice(&v).view(shape).to_kind(Kind::Float)
        }
        WireFormat::Int8 => {
            let q: Vec<i8> = bytes[..n].iter().map(|&b| b as i8).collect();
            let q = Tensor::from_slice(&q).view(shape);
            let mut scale_shape = vec![1i64; shape.len()];
            if channels > 1 || scale == ScaleGranularity::Channel {
                scale_shape[channel_axis(shape.len()) as usize] = channels as i64;
            }
            let s = Tensor::from_slice(&f32s(&bytes[n..body])).view(scale_shape.as_slice());
            dequantize_int8(&q, &s)
        }
    };
    let tokens = text.then(|| u16::from_le_bytes([bytes[body], bytes[body + 1]]) as usize);
    Ok((x, tokens))
}

/// An image input ([1, 3, H, W], normalised by `norm`) as an 8-bit RGB PNG: what cloud-only
/// inference uploads.
pub fn image_png(x: &Tensor, norm: &crate::graph::Normalisation) -> Result<Vec<u8>> {
    let size = x.size();
    let [1, 3, h, w] = size.as_slice() else {
        bail!("an image input is [1, 3, H, W], not {size:?}");
    };
    let (h, w) = (*h as usize, *w as usize);
    let v = Vec::<f32>::try_from(x.to_kind(Kind::Float).flatten(0, -1))?;
    let mut rgb = vec![0u8; 3 * h * w];
    for i in 0..h * w {
        for c in 0..3 {
            // A BGR model's channel 2 - c is RGB channel c.
            let read = if norm.bgr { 2 - c } else { c };
            rgb[3 * i + c] = norm.pixel(v[read * h * w + i], read);
        }
    }
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(
        &rgb,
        w as u32,
        h as u32,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(out)
}

/// Bytes a text of `tokens` tokens takes as ids: 2 each when the vocabulary fits 16 bits, else 4.
pub fn token_id_bytes(tokens: usize, vocab: usize) -> usize {
    tokens * if vocab <= 1 << 16 { 2 } else { 4 }
}
