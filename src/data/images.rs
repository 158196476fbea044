//! Image files (PNG, JPEG) as a model's input batch: decoded to RGB (or BGR), scaled,
//! resized to the model's size and normalised as the graph or the user states. For `cut predict`;
//! the label-free data of unlabelled image folders is the next reader.

use anyhow::{anyhow, bail, Result};
use std::path::Path;
use tch::{Kind, Tensor};

pub use crate::graph::Normalisation;

/// The images at `paths` as one batch [N, 3, height, width]: each resized (bilinear, half-pixel
/// centres) to the model's size, then normalised.
pub fn image_batch(paths: &[&Path], height: usize, width: usize, norm: &Normalisation) -> Result<Tensor> {
    norm.check()?;
    let images = paths
        .iter()
        .map(|p| read_image(p, height, width, norm))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::stack(&images, 0))
}

fn read_image(path: &Path, height: usize, width: usize, norm: &Normalisation) -> Result<Tensor> {
    let bytes = crate::fsio::read_input(path, crate::fsio::limit::IMAGE, "the image")?;
    let img = image::load_from_memory(&bytes)
        .map_err(|e| anyhow!("{}: cannot read image ({e}; PNG and JPEG are read)", path.display()))?
        .to_rgb8();
    let (w, h) = (img.width() as i64, img.height() as i64);
    if w == 0 || h == 0 {
        bail!("{}: the image is empty", path.display());
    }
    let hwc = Tensor::from_slice(img.as_raw()).view([h, w, 3]);
    // As `Normalisation::value` computes it, so a file and a dataset give the same values.
    let mut chw = hwc.permute([2, 0, 1]).to_kind(Kind::Float) / norm.divisor() as f64;
    if norm.bgr {
        chw = chw.flip([0]);
    }
    if (h, w) != (height as i64, width as i64) {
        chw = chw
            .unsqueeze(0)
            .upsample_bilinear2d([height as i64, width as i64], false, None, None)
            .squeeze_dim(0);
    }
    let mean = Tensor::from_slice(&norm.mean.map(|m| m as f32)).view([3, 1, 1]);
    let std = Tensor::from_slice(&norm.std.map(|s| s as f32)).view([3, 1, 1]);
    Ok((chw - mean) / std)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_are_scaled_reordered_resized_and_normalised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.png");
        // 2x1: a red pixel and a blue one.
        let img = image::RgbImage::from_raw(2, 1, vec![255, 0, 0, 0, 0, 255]).unwrap();
        img.save(&path).unwrap();
        let rgb = image_batch(&[&path], 1, 2, &Normalisation::default()).unwrap();
        assert_eq!(rgb.size(), [1, 3, 1, 2]);
        assert_eq!(
            Vec::<f32>::try_from(rgb.flatten(0, -1)).unwrap(),
            [1., 0., 0., 0., 0., 1.]
        );
        let norm = Normalisation {
            mean: [0.5, 0.5, 0.5],
            std: [0.5, 0.25, 0.5],
            bgr: true,
            ..Default::default()
        };
        let bgr = image_batch(&[&path], 1, 2, &norm).unwrap();
        // Blue first: (0 - 0.5) / 0.5 = -1, (1 - 0.5) / 0.5 = 1; green (0 - 0.5) / 0.25 = -2.
        assert_eq!(
            Vec::<f32>::try_from(bgr.flatten(0, -1)).unwrap(),
            [-1., 1., -2., -2., 1., -1.]
        );
        // Resized to 1x1 (bilinear, half-pixel centres): the two pixels' mean.
        let small = image_batch(&[&path], 1, 1, &Normalisation::default()).unwrap();
        assert_eq!(Vec::<f32>::try_from(small.flatten(0, -1)).unwrap(), [0.5, 0., 0.5]);
        let bad = Normalisation {
            std: [0.0, 1.0, 1.0],
            ..Default::default()
        };
        assert!(image_batch(&[&path], 1, 2, &bad).is_err());
    }
}
