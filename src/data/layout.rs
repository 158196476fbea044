//! The NYUv2 3-task layout that users of the reference code have: a JSON index of
//! [image, segmentation, normal, depth] paths per split, PNG images and labels, `.npy` depth.

use anyhow::{anyhow, bail, Context, Result};
use image::{ImageBuffer, Luma, Rgb};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const INDEX_FILE: &str = "nyu_v2_3task.json";
/// Per-channel mean subtracted from BGR images (the reference's).
pub const BGR_MEAN: [f64; 3] = [104.006_99, 116.668_77, 122.678_92];

/// The reference's input: BGR pixels as stored (0 to 255) minus [`BGR_MEAN`]. The layout's images
/// take it unless the model states its own.
pub fn reference_normalisation() -> crate::graph::Normalisation {
    crate::graph::Normalisation {
        range: 255.0,
        mean: BGR_MEAN,
        std: [1.0; 3],
        bgr: true,
    }
}
/// Segmentation label of pixels that take no part in loss or metrics.
pub const SEG_IGNORE: i64 = 255;
/// Depth at or below this is invalid (the reference's threshold).
pub const DEPTH_VALID_MIN: f32 = 3e-5;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DatasetIndex {
    pub train: Vec<[String; 4]>,
    pub test: Vec<[String; 4]>,
}

/// Encodes a unit normal as 8-bit: v = round((n + 1) * 127), so a valid pixel never holds 255.
/// A zero vector (invalid) becomes (255, 255, 255).
pub fn encode_normal(n: [f32; 3]) -> [u8; 3] {
    if n == [0.0; 3] {
        return [255; 3];
    }
    n.map(|c| ((c.clamp(-1.0, 1.0) + 1.0) * 127.0).round() as u8)
}

/// Decodes n = v / 127 - 1, renormalised; any channel at 255 means invalid (zero vector).
pub fn decode_normal(v: [u8; 3]) -> [f32; 3] {
    if v.contains(&255) {
        return [0.0; 3];
    }
    let n = v.map(|c| c as f32 / 127.0 - 1.0);
    let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
    if len < 1e-6 {
        return [0.0; 3];
    }
    n.map(|c| c / len)
}

/// Writes one sample's four files and returns their paths relative to `root`.
#[allow(clippy::too_many_arguments)]
pub fn write_sample_files(
    root: &Path,
    split: &str,
    index: usize,
    height: usize,
    width: usize,
    rgb: &[u8],
    seg: &[u8],
    normal: &[[u8; 3]],
    depth: &[f32],
) -> Result<[String; 4]> {
    let rel = |kind: &str, ext: &str| format!("{split}/{kind}/{index:05}.{ext}");
    let paths = [
        rel("img", "png"),
        rel("seg", "png"),
        rel("normal", "png"),
        rel("depth", "npy"),
    ];
    for p in &paths {
        let dir = root.join(p);
        std::fs::create_dir_all(dir.parent().unwrap()).with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let (h, w) = (height as u32, width as u32);
    let img: ImageBuffer<Rgb<u8>, _> =
        ImageBuffer::from_raw(w, h, rgb.to_vec()).ok_or_else(|| anyhow!("image buffer size"))?;
    img.save(root.join(&paths[0])).with_context(|| paths[0].clone())?;
    let seg_img: ImageBuffer<Luma<u8>, _> =
        ImageBuffer::from_raw(w, h, seg.to_vec()).ok_or_else(|| anyhow!("seg buffer size"))?;
    seg_img.save(root.join(&paths[1])).with_context(|| paths[1].clone())?;
    let flat: Vec<u8> = normal.iter().flatten().copied().collect();
    let nimg: ImageBuffer<Rgb<u8>, _> =
        ImageBuffer::from_raw(w, h, flat).ok_or_else(|| anyhow!("normal buffer size"))?;
    nimg.save(root.join(&paths[2])).with_context(|| paths[2].clone())?;
    let arr = Array2::from_shape_vec((height, width), depth.to_vec())?;
    ndarray_npy::write_npy(root.join(&paths[3]), &arr).with_context(|| paths[3].clone())?;
    Ok(paths)
}

/// The name of the NYUv2 layout's one input.
pub const IMAGE_INPUT: &str = "image";

/// One sample's files, absolute.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub image: PathBuf,
    pub seg: PathBuf,
    pub normal: PathBuf,
    pub depth: PathBuf,
    /// How the image's pixels become the model's input.
    pub norm: crate::graph::Normalisation,
}

/// Decoded sample: host arrays in the layout the model and metrics want.
pub struct Sample {
    pub height: usize,
    pub width: usize,
    /// Normalised as the item says, channel-major [3, H, W].
    pub image: Vec<f32>,
    /// [H, W], 255 = ignore.
    pub seg: Vec<i64>,
    /// Channel-major [3, H, W]; zero vectors where invalid.
    pub normal: Vec<f32>,
    /// [H, W] metres; invalid at or below DEPTH_VALID_MIN.
    pub depth: Vec<f32>,
}

fn open_png(path: &Path) -> Result<image::DynamicImage> {
    let bytes = crate::fsio::read_input(path, crate::fsio::limit::IMAGE, "the image")?;
    image::load_from_memory(&bytes).map_err(|e| anyhow!("{}: cannot read image ({e})", path.display()))
}

fn check_size(path: &Path, got: (usize, usize), want: (usize, usize)) -> Result<()> {
    if got != want {
        bail!(
            "{}: is {}x{}, but its image is {}x{}",
            path.display(),
            got.0,
            got.1,
            want.0,
            want.1
        );
    }
    Ok(())
}

impl Item {
    pub fn load(&self) -> Result<Sample> {
        let img = open_png(&self.image)?.to_rgb8();
        let (width, height) = (img.width() as usize, img.height() as usize);
        let n = width * height;
        let mut image = vec![0f32; 3 * n];
        for (i, px) in img.pixels().enumerate() {
            // Stored RGB; the reference reads BGR (OpenCV).
            for c in 0..3 {
                let stored = if self.norm.bgr { 2 - c } else { c };
                image[c * n + i] = self.norm.value(px.0[stored], c);
            }
        }
        // Class indices as stored: 16-bit values are read as they are, not scaled to 8 bits.
        let seg_img = open_png(&self.seg)?;
        let seg_hw = (seg_img.height() as usize, seg_img.width() as usize);
        let seg: Vec<i64> = match &seg_img {
            image::DynamicImage::ImageLuma8(g) => g.pixels().map(|p| p.0[0] as i64).collect(),
            image::DynamicImage::ImageLuma16(g) => g.pixels().map(|p| p.0[0] as i64).collect(),
            other => bail!(
                "{}: segmentation must be a single-channel PNG of class indices (8- or 16-bit grayscale), not {:?}",
                self.seg.display(),
                other.color()
            ),
        };
        check_size(&self.seg, seg_hw, (height, width))?;

        // Three 8-bit channels encode a normal; a grayscale map would decode to (v, v, v).
        let nimg = open_png(&self.normal)?;
        if !matches!(nimg.color(), image::ColorType::Rgb8 | image::ColorType::Rgba8) {
            bail!(
                "{}: a normal map must be an 8-bit RGB PNG, not {:?}",
                self.normal.display(),
                nimg.color()
            );
        }
        let nimg = nimg.to_rgb8();
        check_size(
            &self.normal,
            (nimg.height() as usize, nimg.width() as usize),
            (height, width),
        )?;
        let mut normal = vec![0f32; 3 * n];
        for (i, px) in nimg.pixels().enumerate() {
            let v = decode_normal(px.0);
            for c in 0..3 {
                normal[c * n + i] = v[c];
            }
        }

        // f32, else f64; an error of shape or length is reported as it is, not as the f64 retry's
        // complaint about the dtype.
        let arr: Array2<f32> = match ndarray_npy::read_npy::<_, Array2<f32>>(&self.depth) {
            Ok(a) => a,
            Err(ndarray_npy::ReadNpyError::WrongDescriptor(_)) => ndarray_npy::read_npy::<_, Array2<f64>>(&self.depth)
                .map(|a| a.mapv(|v| v as f32))
                .map_err(|e| anyhow!("{}: cannot read a 2-d float .npy ({e})", self.depth.display()))?,
            Err(e) => bail!("{}: cannot read a 2-d float .npy ({e})", self.depth.display()),
        };
        check_size(&self.depth, arr.dim(), (height, width))?;
        if let Some(pos) = arr.iter().position(|v| !v.is_finite()) {
            bail!(
                "{}: depth is not finite at pixel ({}, {})",
                self.depth.display(),
                pos / width,
                pos % width
            );
        }
        let depth = arr.iter().copied().collect();
        Ok(Sample {
            height,
            width,
            image,
            seg,
            normal,
            depth,
        })
    }
}

/// The NYUv2 layout as examples: the input `image` [3, H, W] (normalised as each item says) and the labels `seg`
/// [H, W] (int64, 255 ignored), `normal` [3, H, W] and `depth` [1, H, W].
impl super::example::Examples for Vec<Item> {
    fn count(&self) -> usize {
        self.len()
    }
    fn load(&self, index: usize) -> Result<super::example::Example> {
        use super::example::{Example, Field};
        let s = self[index].load()?;
        let (h, w) = (s.height as i64, s.width as i64);
        Ok(Example {
            inputs: vec![Field::f32(IMAGE_INPUT, vec![3, h, w], s.image)],
            labels: vec![
                Field::i64("seg", vec![h, w], s.seg),
                Field::f32("normal", vec![3, h, w], s.normal),
                Field::f32("depth", vec![1, h, w], s.depth),
            ],
        })
    }
    fn describe(&self, index: usize) -> String {
        self[index].image.display().to_string()
    }
}
