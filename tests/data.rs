//! The synthetic generator, the dataset reader and the loader.

use cut::data::layout::{decode_normal, encode_normal, BGR_MEAN};
use cut::data::loader::Loader;
use cut::data::synth::{write_dataset, Camera, Object, Scene, Shape, SynthConfig, BACK_WALL, FLOOR, IGNORE};
use cut::data::{Dataset, Split};
use std::path::Path;
use tch::Device;

fn synth(dir: &Path, train: usize, test: usize, seed: u64) {
    let cfg = SynthConfig {
        train,
        test,
        height: 24,
        width: 32,
        seed,
    };
    write_dataset(dir, &cfg, 2).unwrap();
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn same_seed_same_bytes_other_seed_other_scenes() {
    let t = tempfile::tempdir().unwrap();
    synth(&t.path().join("a"), 3, 2, 5);
    synth(&t.path().join("b"), 3, 2, 5);
    synth(&t.path().join("c"), 3, 2, 6);
    let (a, b, c) = (
        files(&t.path().join("a")),
        files(&t.path().join("b")),
        files(&t.path().join("c")),
    );
    assert_eq!(a.len(), 5 * 4 + 1);
    assert!(a == b);
    assert!(a != c);
    // Refuses a non-empty folder.
    let err = write_dataset(
        &t.path().join("a"),
        &SynthConfig {
            train: 1,
            test: 1,
            height: 24,
            width: 32,
            seed: 0,
        },
        1,
    )
    .unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}

fn plane_scene(distance: f64) -> Scene {
    Scene {
        camera: Camera {
            position: [0.0, 1.0, 0.0],
            yaw: 0.0,
            pitch: 0.0,
            focal: 20.0,
        },
        objects: vec![
            Object {
                shape: Shape::Rect {
                    axis: 2,
                    value: distance,
                    lo: [-50.0, -50.0],
                    hi: [50.0, 50.0],
                },
                class: BACK_WALL,
                albedo: [0.5; 3],
                texture: 0.0,
            },
            // Floor at y = 0, one metre below the camera, ending at the wall.
            Object {
                shape: Shape::Rect {
                    axis: 1,
                    value: 0.0,
                    lo: [0.0, -50.0],
                    hi: [distance, 50.0],
                },
                class: FLOOR,
                albedo: [0.5; 3],
                texture: 0.0,
            },
        ],
        light: [0.0, 0.0, -1.0],
        ambient: 0.2,
        seed: 0,
    }
}

#[test]
fn camera_facing_a_plane_gives_exact_labels() {
    let r = plane_scene(3.0).render(20, 30);
    // Upper half sees the wall straight on: depth 3 everywhere, normal towards the camera.
    for v in 0..10 {
        for u in 0..30 {
            let i = v * 30 + u;
            assert_eq!(r.class[i], BACK_WALL, "({v}, {u})");
            assert!((r.depth[i] - 3.0).abs() < 1e-5, "({v}, {u}) {}", r.depth[i]);
            assert_eq!(r.normal[i], [0.0, 0.0, -1.0]);
        }
    }
    // Row 19 sees the floor: the ray (x, (19.5 - 10) / 20, 1) meets y = 1 below the camera at
    // depth 20 / 9.5; the floor's normal points up, which is -y in camera coordinates.
    let i = 19 * 30 + 15;
    assert_eq!(r.class[i], FLOOR);
    assert!((r.depth[i] as f64 - 20.0 / 9.5).abs() < 1e-5, "{}", r.depth[i]);
    assert_eq!(r.normal[i], [0.0, -1.0, 0.0]);
    // Facing the light head-on: colour = albedo * 255, whatever the ambient.
    assert_eq!(&r.rgb[0..3], &[128, 128, 128]);
}

#[test]
fn rays_that_leave_the_scene_are_invalid() {
    let mut s = plane_scene(3.0);
    s.objects.truncate(1);
    if let Shape::Rect { lo, hi, .. } = &mut s.objects[0].shape {
        *lo = [-50.0, -50.0];
        *hi = [50.0, 0.5]; // the wall stops half a metre below the camera
    }
    let r = s.render(20, 30);
    assert_eq!(r.class[0], IGNORE);
    assert_eq!(r.depth[0], 0.0);
    assert_eq!(r.normal[0], [0.0; 3]);
    assert_eq!(r.class[19 * 30], BACK_WALL);
}

#[test]
fn normal_encoding_round_trips() {
    for n in [
        [0.0f32, 0.0, -1.0],
        [0.6, -0.8, 0.0],
        [0.577, 0.577, -0.577],
        [1.0, 0.0, 0.0],
        [-1.0, 0.0, 0.0],
    ] {
        let v = encode_normal(n);
        assert!(!v.contains(&255), "{v:?}");
        let back = decode_normal(v);
        let cos: f32 =
            n.iter().zip(back).map(|(a, b)| a * b).sum::<f32>() / n.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!(cos > 0.9999, "{n:?} -> {v:?} -> {back:?}");
    }
    assert_eq!(encode_normal([0.0; 3]), [255; 3]);
    assert_eq!(decode_normal([10, 255, 10]), [0.0; 3]);
    // v = round((n + 1) * 127): n = -1 -> 0, 0 -> 127, 1 -> 254.
    assert_eq!(encode_normal([-1.0, 0.0, 1.0]), [0, 127, 254]);
}

#[test]
fn reader_splits_and_decodes() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("d");
    synth(&root, 8, 2, 1);
    let ds = Dataset::open(&root, None, &cut::data::layout::reference_normalisation()).unwrap();
    let val = ds.split(Split::Val, 0.25).unwrap();
    let train = ds.split(Split::Train, 0.25).unwrap();
    assert_eq!((val.count(), train.count()), (2, 6));
    let names = |s: &cut::data::example::Samples| (0..s.count()).map(|i| s.describe(i)).collect::<Vec<_>>();
    assert!(names(&val).iter().all(|v| !names(&train).contains(v)));
    assert_eq!(
        names(&ds.split(Split::Val, 0.25).unwrap()),
        names(&val),
        "the carve is deterministic"
    );
    assert_eq!(ds.split(Split::Test, 0.25).unwrap().count(), 2);
    assert!(ds
        .split(Split::Val, 0.0)
        .unwrap_err()
        .to_string()
        .contains("split is empty"));

    let item = &cut::data::read_index(&root, None, &cut::data::layout::reference_normalisation())
        .unwrap()
        .2[0];
    let s = item.load().unwrap();
    let png = image::open(&item.image).unwrap().to_rgb8();
    let px = png.get_pixel(5, 3).0;
    let n = 24 * 32;
    let i = 3 * 32 + 5;
    // Channel 0 is blue minus the blue mean.
    assert_eq!(s.image[i], px[2] as f32 - BGR_MEAN[0] as f32);
    assert_eq!(s.image[2 * n + i], px[0] as f32 - BGR_MEAN[2] as f32);
    let depth: ndarray::Array2<f32> = ndarray_npy::read_npy(&item.depth).unwrap();
    assert_eq!(s.depth[i], depth[[3, 5]]);
    // A model that records torchvision's normalisation reads RGB, (p / 255 - mean) / std.
    let rgb = cut::graph::Normalisation {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        ..Default::default()
    };
    let item = &cut::data::read_index(&root, None, &rgb).unwrap().2[0];
    let s = item.load().unwrap();
    assert_eq!(s.image[i], (px[0] as f32 / 255.0 - 0.485) / 0.229);
    assert_eq!(s.image[2 * n + i], (px[2] as f32 / 255.0 - 0.406) / 0.225);

    let batches: Vec<_> = Loader::sequential(ds.test.clone(), 1, Device::Cpu)
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].input("image").unwrap().size(), [1, 3, 24, 32]);
    assert_eq!(batches[0].label("seg").unwrap().size(), [1, 24, 32]);
    assert_eq!(batches[0].label("seg").unwrap().kind(), tch::Kind::Int64);
    assert_eq!(batches[0].label("depth").unwrap().size(), [1, 1, 24, 32]);
    // The shuffled stream is endless and seeded.
    let depth_sums = || -> Vec<f64> {
        Loader::shuffled(ds.train.clone(), 3, 9, Device::Cpu)
            .take(5)
            .map(|b| {
                b.unwrap()
                    .label("depth")
                    .unwrap()
                    .sum(tch::Kind::Double)
                    .double_value(&[])
            })
            .collect()
    };
    assert_eq!(depth_sums(), depth_sums());
}

#[test]
fn bad_files_are_named() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("d");
    synth(&root, 2, 1, 1);
    let ds = Dataset::open(&root, None, &cut::data::layout::reference_normalisation()).unwrap();
    let item = cut::data::read_index(&root, None, &cut::data::layout::reference_normalisation())
        .unwrap()
        .2[0]
        .clone();

    std::fs::write(&item.image, b"not a png").unwrap();
    let err = item.load().err().unwrap().to_string();
    assert!(
        err.contains(&item.image.display().to_string()) && err.contains("cannot read image"),
        "{err}"
    );

    let item = cut::data::read_index(&root, None, &cut::data::layout::reference_normalisation())
        .unwrap()
        .1[0]
        .clone();
    let small = image::GrayImage::new(4, 4);
    small.save(&item.seg).unwrap();
    let err = item.load().err().unwrap().to_string();
    assert!(
        err.contains(&item.seg.display().to_string()) && err.contains("is 4x4"),
        "{err}"
    );

    let item = cut::data::read_index(&root, None, &cut::data::layout::reference_normalisation())
        .unwrap()
        .1[1]
        .clone();
    let mut depth = ndarray::Array2::<f32>::ones((24, 32));
    depth[[2, 7]] = f32::NAN;
    ndarray_npy::write_npy(&item.depth, &depth).unwrap();
    let err = item.load().err().unwrap().to_string();
    assert!(err.contains("depth is not finite at pixel (2, 7)"), "{err}");

    std::fs::remove_file(&item.normal).unwrap();
    let err = item.load().err().unwrap().to_string();
    assert!(err.contains(&item.normal.display().to_string()), "{err}");

    // The loader passes the error on and stops.
    let results: Vec<_> = Loader::sequential(ds.train.clone(), 1, Device::Cpu).collect();
    assert!(results[0].is_err());

    assert!(Dataset::open(
        &t.path().join("none"),
        None,
        &cut::data::layout::reference_normalisation()
    )
    .unwrap_err()
    .to_string()
    .contains("does not exist"));
    std::fs::write(root.join("nyu_v2_3task.json"), b"{\"train\": 3}").unwrap();
    assert!(format!(
        "{:#}",
        Dataset::open(&root, None, &cut::data::layout::reference_normalisation()).unwrap_err()
    )
    .contains("not a dataset index"));
}

/// A source of examples other than the NYUv2 layout: token ids [len] and a per-sample label, with
/// example 3 of another length.
struct Tokens;

impl cut::data::example::Examples for Tokens {
    fn count(&self) -> usize {
        5
    }
    fn load(&self, i: usize) -> anyhow::Result<cut::data::example::Example> {
        use cut::data::example::{Example, Field};
        let len = if i == 3 { 4 } else { 3 };
        Ok(Example {
            inputs: vec![Field::i64(
                "ids",
                vec![len],
                (0..len).map(|k| 10 * i as i64 + k).collect(),
            )],
            labels: vec![Field::f32("score", vec![1], vec![i as f32])],
        })
    }
    fn describe(&self, i: usize) -> String {
        format!("tokens.jsonl:{}", i + 1)
    }
}

/// The loader batches any source of examples by name, in order or shuffled, and names the example
/// that does not fit its batch.
#[test]
fn any_source_of_examples_loads_in_batches() {
    use cut::data::example::Examples;
    use std::sync::Arc;
    let source: Arc<dyn Examples> = Arc::new(Tokens);
    let mut batches = Loader::sequential(source.clone(), 2, Device::Cpu);
    let first = batches.next().unwrap().unwrap();
    let ids = first.input("ids").unwrap();
    assert_eq!(ids.kind(), tch::Kind::Int64);
    assert_eq!(Vec::<i64>::try_from(ids.flatten(0, -1)).unwrap(), [0, 1, 2, 10, 11, 12]);
    assert_eq!(
        Vec::<f32>::try_from(first.label("score").unwrap().flatten(0, -1)).unwrap(),
        [0.0, 1.0]
    );
    let err = batches.next().unwrap().err().unwrap().to_string();
    assert_eq!(
        err,
        "tokens.jsonl:4: its ids is [4], the first of its batch has ids [3]; all examples must have one size"
    );
    // One example at a time, every length goes through; the stream is endless and seeded.
    assert_eq!(
        Loader::sequential(source.clone(), 1, Device::Cpu)
            .filter(|b| b.is_ok())
            .count(),
        5
    );
    let scores = |seed| -> Vec<f32> {
        Loader::shuffled(source.clone(), 1, seed, Device::Cpu)
            .take(10)
            .map(|b| b.unwrap().label("score").unwrap().double_value(&[0, 0]) as f32)
            .collect()
    };
    assert_eq!(scores(4), scores(4));
    let mut seen = scores(4);
    seen.sort_by(f32::total_cmp);
    seen.dedup();
    assert_eq!(seen, [0.0, 1.0, 2.0, 3.0, 4.0], "every example once per epoch");
}

/// Label images read as the layout means them or refused: a 16-bit segmentation keeps its class
/// indices (scaling to 8 bits turned 3 into 0); RGB segmentation and grayscale normal maps are
/// refused, naming the file.
#[test]
fn label_images_are_read_as_meant_or_refused() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("d");
    synth(&root, 2, 1, 1);
    let item = cut::data::read_index(&root, None, &cut::data::layout::reference_normalisation())
        .unwrap()
        .2[0]
        .clone();
    let (w, h) = (32u32, 24u32);

    let mut seg16 = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::new(w, h);
    seg16.put_pixel(5, 3, image::Luma([3]));
    seg16.put_pixel(6, 3, image::Luma([255]));
    seg16.put_pixel(7, 3, image::Luma([300]));
    seg16.save(&item.seg).unwrap();
    let s = item.load().unwrap();
    let at = |x: usize, y: usize| s.seg[y * w as usize + x];
    assert_eq!((at(5, 3), at(6, 3), at(7, 3), at(0, 0)), (3, 255, 300, 0));

    image::RgbImage::new(w, h).save(&item.seg).unwrap();
    let err = item.load().err().unwrap().to_string();
    assert!(
        err.starts_with(&format!(
            "{}: segmentation must be a single-channel PNG",
            item.seg.display()
        )),
        "{err}"
    );

    image::GrayImage::new(w, h).save(&item.seg).unwrap();
    image::GrayImage::new(w, h).save(&item.normal).unwrap();
    let err = item.load().err().unwrap().to_string();
    assert_eq!(
        err,
        format!(
            "{}: a normal map must be an 8-bit RGB PNG, not L8",
            item.normal.display()
        )
    );
}

/// A depth .npy of the wrong rank, or cut short, is reported as such (the f64 retry used to report
/// a dtype mismatch instead).
#[test]
fn npy_shape_and_length_errors_say_so() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("d");
    synth(&root, 2, 1, 1);
    let item = cut::data::read_index(&root, None, &cut::data::layout::reference_normalisation())
        .unwrap()
        .2[0]
        .clone();
    ndarray_npy::write_npy(&item.depth, &ndarray::Array3::<f32>::ones((2, 3, 4))).unwrap();
    let err = item.load().err().unwrap().to_string();
    assert!(
        err.starts_with(&format!("{}: cannot read a 2-d float .npy (", item.depth.display())),
        "{err}"
    );
    assert!(err.contains("ndim") && !err.contains("descriptor"), "{err}");
    ndarray_npy::write_npy(&item.depth, &ndarray::Array2::<f32>::ones((24, 32))).unwrap();
    let bytes = std::fs::read(&item.depth).unwrap();
    std::fs::write(&item.depth, &bytes[..bytes.len() - 100]).unwrap();
    let err = item.load().err().unwrap().to_string();
    assert!(!err.contains("descriptor"), "{err}");
    // f64 depth still reads.
    ndarray_npy::write_npy(&item.depth, &ndarray::Array2::<f64>::from_elem((24, 32), 2.5)).unwrap();
    assert_eq!(item.load().unwrap().depth[7], 2.5);
}
