//! A synthetic indoor-scene generator: a ray caster renders a room (floor, walls, sometimes a
//! ceiling) with primitives in random poses, colours and lighting, and writes exact per-pixel
//! class, metric depth and camera-space surface normal in the NYUv2 3-task layout.
//!
//! Colours are drawn independently of class, so a pixel's class is not readable from its colour:
//! a model has to use shape and context.

use super::layout::{encode_normal, write_sample_files, DatasetIndex, INDEX_FILE};
use anyhow::{bail, Context, Result};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

pub const CLASSES: [&str; 12] = [
    "floor",
    "back_wall",
    "left_wall",
    "right_wall",
    "ceiling",
    "sphere",
    "box",
    "cylinder",
    "cone",
    "ellipsoid",
    "pillar",
    "slab",
];
pub const FLOOR: u8 = 0;
pub const BACK_WALL: u8 = 1;
const LEFT_WALL: u8 = 2;
const RIGHT_WALL: u8 = 3;
const CEILING: u8 = 4;
const SPHERE: u8 = 5;
const BOX: u8 = 6;
const CYLINDER: u8 = 7;
const CONE: u8 = 8;
const ELLIPSOID: u8 = 9;
const PILLAR: u8 = 10;
const SLAB: u8 = 11;
/// Label for pixels whose ray leaves the scene.
pub const IGNORE: u8 = 255;

type V3 = [f64; 3];
fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn mul(a: V3, s: f64) -> V3 {
    [a[0] * s, a[1] * s, a[2] * s]
}
fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn cross(a: V3, b: V3) -> V3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
fn normalize(a: V3) -> V3 {
    mul(a, 1.0 / dot(a, a).sqrt())
}

/// Solves a t^2 + b t + c = 0 for the smallest root above `tmin`.
fn smallest_root(a: f64, b: f64, c: f64, tmin: f64) -> Option<f64> {
    if a.abs() < 1e-12 {
        let t = -c / b;
        return (t > tmin).then_some(t);
    }
    let disc = b * b - 4.0 * a * c;
    if disc < 0.0 {
        return None;
    }
    let s = disc.sqrt();
    let (t0, t1) = ((-b - s) / (2.0 * a), (-b + s) / (2.0 * a));
    let (lo, hi) = if t0 < t1 { (t0, t1) } else { (t1, t0) };
    if lo > tmin {
        Some(lo)
    } else if hi > tmin {
        Some(hi)
    } else {
        None
    }
}

/// Geometry in world coordinates: y is up, the floor is y = 0.
#[derive(Clone, Debug)]
pub enum Shape {
    /// An axis-aligned rectangle: coordinate `axis` equals `value`, the other two axes within bounds.
    Rect {
        axis: usize,
        value: f64,
        lo: [f64; 2],
        hi: [f64; 2],
    },
    Sphere {
        center: V3,
        radius: f64,
    },
    Ellipsoid {
        center: V3,
        radii: V3,
    },
    /// A box resting on its base, rotated by `yaw` about the vertical axis.
    Box {
        center: V3,
        half: V3,
        yaw: f64,
    },
    /// A vertical capped cylinder from `base.y` to `base.y + height`.
    Cylinder {
        base: V3,
        radius: f64,
        height: f64,
    },
    /// A vertical cone with its base disc at `base.y` and apex above.
    Cone {
        base: V3,
        radius: f64,
        height: f64,
    },
}

const EPS: f64 = 1e-6;

impl Shape {
    /// Nearest hit beyond EPS: distance along the (unnormalised) direction and the outward normal.
    fn intersect(&self, o: V3, d: V3) -> Option<(f64, V3)> {
        match *self {
            Shape::Rect { axis, value, lo, hi } => {
                if d[axis].abs() < 1e-12 {
                    return None;
                }
                let t = (value - o[axis]) / d[axis];
                if t <= EPS {
                    return None;
                }
                let p = add(o, mul(d, t));
                let others = [(axis + 1) % 3, (axis + 2) % 3];
                for (i, &k) in others.iter().enumerate() {
                    let (a, b) = (lo[i].min(hi[i]), lo[i].max(hi[i]));
                    if p[k] < a || p[k] > b {
                        return None;
                    }
                }
                let mut n = [0.0; 3];
                n[axis] = 1.0;
                Some((t, n))
            }
            Shape::Sphere { center, radius } => Shape::Ellipsoid {
                center,
                radii: [radius; 3],
            }
            .intersect(o, d),
            Shape::Ellipsoid { center, radii } => {
                let oc = sub(o, center);
                let os = [oc[0] / radii[0], oc[1] / radii[1], oc[2] / radii[2]];
                let ds = [d[0] / radii[0], d[1] / radii[1], d[2] / radii[2]];
                let t = smallest_root(dot(ds, ds), 2.0 * dot(os, ds), dot(os, os) - 1.0, EPS)?;
                let p = sub(add(o, mul(d, t)), center);
                let n = [
                    p[0] / (radii[0] * radii[0]),
                    p[1] / (radii[1] * radii[1]),
                    p[2] / (radii[2] * radii[2]),
                ];
                Some((t, normalize(n)))
            }
            Shape::Box { center, half, yaw } => {
                let (s, c) = yaw.sin_cos();
                // World -> local rotation about y by -yaw.
                let to_local = |v: V3| [c * v[0] - s * v[2], v[1], s * v[0] + c * v[2]];
                let ol = to_local(sub(o, center));
                let dl = to_local(d);
                let (mut tnear, mut tfar, mut axis_near, mut axis_far) = (f64::NEG_INFINITY, f64::INFINITY, 0, 0);
                for k in 0..3 {
                    if dl[k].abs() < 1e-12 {
                        if ol[k].abs() > half[k] {
                            return None;
                        }
                        continue;
                    }
                    let (mut t0, mut t1) = ((-half[k] - ol[k]) / dl[k], (half[k] - ol[k]) / dl[k]);
                    if t0 > t1 {
                        std::mem::swap(&mut t0, &mut t1);
                    }
                    if t0 > tnear {
                        tnear = t0;
                        axis_near = k;
                    }
                    if t1 < tfar {
                        tfar = t1;
                        axis_far = k;
                    }
                }
                if tnear > tfar {
                    return None;
                }
                let (t, k) = if tnear > EPS {
                    (tnear, axis_near)
                } else if tfar > EPS {
                    (tfar, axis_far)
                } else {
                    return None;
                };
                let mut nl = [0.0; 3];
                nl[k] = if ol[k] + dl[k] * t > 0.0 { 1.0 } else { -1.0 };
                // Local -> world.
                Some((t, [c * nl[0] + s * nl[2], nl[1], -s * nl[0] + c * nl[2]]))
            }
            Shape::Cylinder { base, radius, height } => {
                let mut best: Option<(f64, V3)> = None;
                let (ox, oz) = (o[0] - base[0], o[2] - base[2]);
                let a = d[0] * d[0] + d[2] * d[2];
                if a > 1e-12 {
                    let b = 2.0 * (ox * d[0] + oz * d[2]);
                    let c = ox * ox + oz * oz - radius * radius;
                    let disc = b * b - 4.0 * a * c;
                    if disc >= 0.0 {
                        for t in [(-b - disc.sqrt()) / (2.0 * a), (-b + disc.sqrt()) / (2.0 * a)] {
                            let y = o[1] + t * d[1];
                            if t > EPS && y >= base[1] && y <= base[1] + height {
                                let p = add(o, mul(d, t));
                                best = Some((t, normalize([p[0] - base[0], 0.0, p[2] - base[2]])));
                                break;
                            }
                        }
                    }
                }
                for (y, ny) in [(base[1] + height, 1.0), (base[1], -1.0)] {
                    if let Some((t, _)) = disc_hit(o, d, [base[0], y, base[2]], radius) {
                        if best.is_none_or(|(bt, _)| t < bt) {
                            best = Some((t, [0.0, ny, 0.0]));
                        }
                    }
                }
                best
            }
            Shape::Cone { base, radius, height } => {
                let k = radius / height;
                let (ox, oz) = (o[0] - base[0], o[2] - base[2]);
                let y0 = base[1] + height - o[1];
                let a = d[0] * d[0] + d[2] * d[2] - k * k * d[1] * d[1];
                let b = 2.0 * (ox * d[0] + oz * d[2] + k * k * y0 * d[1]);
                let c = ox * ox + oz * oz - k * k * y0 * y0;
                let mut best: Option<(f64, V3)> = None;
                let disc = b * b - 4.0 * a * c;
                if disc >= 0.0 && a.abs() > 1e-12 {
                    let mut roots = [(-b - disc.sqrt()) / (2.0 * a), (-b + disc.sqrt()) / (2.0 * a)];
                    roots.sort_by(|x, y| x.partial_cmp(y).unwrap());
                    for t in roots {
                        let y = o[1] + t * d[1];
                        if t > EPS && y >= base[1] && y <= base[1] + height {
                            let p = add(o, mul(d, t));
                            let yy = base[1] + height - p[1];
                            best = Some((t, normalize([p[0] - base[0], k * k * yy, p[2] - base[2]])));
                            break;
                        }
                    }
                }
                if let Some((t, _)) = disc_hit(o, d, base, radius) {
                    if best.is_none_or(|(bt, _)| t < bt) {
                        best = Some((t, [0.0, -1.0, 0.0]));
                    }
                }
                best
            }
        }
    }
}

/// A horizontal disc of `radius` centred at `center`.
fn disc_hit(o: V3, d: V3, center: V3, radius: f64) -> Option<(f64, V3)> {
    if d[1].abs() < 1e-12 {
        return None;
    }
    let t = (center[1] - o[1]) / d[1];
    let p = add(o, mul(d, t));
    let (dx, dz) = (p[0] - center[0], p[2] - center[2]);
    (t > EPS && dx * dx + dz * dz <= radius * radius).then_some((t, [0.0, 1.0, 0.0]))
}

#[derive(Clone, Debug)]
pub struct Object {
    pub shape: Shape,
    pub class: u8,
    pub albedo: V3,
    /// Amplitude of the surface texture (0 = flat colour).
    pub texture: f64,
}

/// A pinhole camera: position, yaw about the vertical axis, pitch down, focal length in pixels.
#[derive(Clone, Debug)]
pub struct Camera {
    pub position: V3,
    pub yaw: f64,
    pub pitch: f64,
    pub focal: f64,
}

#[derive(Clone, Debug)]
pub struct Scene {
    pub camera: Camera,
    pub objects: Vec<Object>,
    /// Direction towards the light.
    pub light: V3,
    pub ambient: f64,
    pub seed: u64,
}

/// Exact labels and the rendered image of one scene.
pub struct Rendered {
    pub height: usize,
    pub width: usize,
    /// RGB, row-major, 3 bytes a pixel.
    pub rgb: Vec<u8>,
    pub class: Vec<u8>,
    /// Metric depth along the optical axis; 0 where the ray leaves the scene.
    pub depth: Vec<f32>,
    /// Unit normal in camera coordinates (x right, y down, z forward), facing the camera; 0 where invalid.
    pub normal: Vec<[f32; 3]>,
}

/// Smooth value noise in [-1, 1] on a lattice, hashed from the seed: a texture that sticks to surfaces.
fn value_noise(p: V3, seed: u64) -> f64 {
    let hash = |x: i64, y: i64, z: i64| -> f64 {
        let mut h = (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            ^ (z as u64).wrapping_mul(0x1656_67B1_9E37_79F9)
            ^ seed;
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 33;
        (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    let f = [p[0].floor(), p[1].floor(), p[2].floor()];
    let w: Vec<f64> = (0..3)
        .map(|k| {
            let t = p[k] - f[k];
            t * t * (3.0 - 2.0 * t)
        })
        .collect();
    let (x, y, z) = (f[0] as i64, f[1] as i64, f[2] as i64);
    let mut acc = 0.0;
    for dx in 0..2 {
        for dy in 0..2 {
            for dz in 0..2 {
                let wx = if dx == 1 { w[0] } else { 1.0 - w[0] };
                let wy = if dy == 1 { w[1] } else { 1.0 - w[1] };
                let wz = if dz == 1 { w[2] } else { 1.0 - w[2] };
                acc += wx * wy * wz * hash(x + dx, y + dy, z + dz);
            }
        }
    }
    acc
}

impl Scene {
    /// Camera axes in world coordinates: right, down, forward.
    fn axes(&self) -> (V3, V3, V3) {
        let (sy, cy) = self.camera.yaw.sin_cos();
        let (sp, cp) = self.camera.pitch.sin_cos();
        let forward = [sy * cp, -sp, cy * cp];
        let right = normalize(cross([0.0, 1.0, 0.0], forward));
        let down = cross(right, forward);
        (right, down, forward)
    }

    pub fn render(&self, height: usize, width: usize) -> Rendered {
        let (right, down, forward) = self.axes();
        let (cx, cy) = (width as f64 / 2.0, height as f64 / 2.0);
        let n = height * width;
        let mut out = Rendered {
            height,
            width,
            rgb: vec![0; n * 3],
            class: vec![IGNORE; n],
            depth: vec![0.0; n],
            normal: vec![[0.0; 3]; n],
        };
        let light = normalize(self.light);
        for v in 0..height {
            for u in 0..width {
                // Camera-space ray with unit z: the hit distance t is the depth along the optical axis.
                let xc = (u as f64 + 0.5 - cx) / self.camera.focal;
                let yc = (v as f64 + 0.5 - cy) / self.camera.focal;
                let d = add(add(mul(right, xc), mul(down, yc)), forward);
                let o = self.camera.position;
                let mut best: Option<(f64, V3, &Object)> = None;
                for obj in &self.objects {
                    if let Some((t, nrm)) = obj.shape.intersect(o, d) {
                        if best.as_ref().is_none_or(|b| t < b.0) {
                            best = Some((t, nrm, obj));
                        }
                    }
                }
                let i = v * width + u;
                let Some((t, mut nrm, obj)) = best else {
                    // Outside the room: dark background, invalid labels.
                    out.rgb[i * 3..i * 3 + 3].copy_from_slice(&[12, 12, 16]);
                    continue;
                };
                if dot(nrm, d) > 0.0 {
                    nrm = mul(nrm, -1.0);
                }
                let p = add(o, mul(d, t));
                let shade = self.ambient + (1.0 - self.ambient) * dot(nrm, light).max(0.0);
                let tex = 1.0 + obj.texture * value_noise(mul(p, 6.0), self.seed ^ obj.class as u64);
                for k in 0..3 {
                    let c = obj.albedo[k] * shade * tex * 255.0;
                    out.rgb[i * 3 + k] = c.round().clamp(0.0, 255.0) as u8;
                }
                out.class[i] = obj.class;
                out.depth[i] = t as f32;
                out.normal[i] = [dot(nrm, right) as f32, dot(nrm, down) as f32, dot(nrm, forward) as f32];
            }
        }
        out
    }

    /// A random room with 3 to 7 primitives resting on the floor.
    pub fn random(seed: u64) -> Scene {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let colour = |rng: &mut ChaCha8Rng| -> V3 {
            [
                rng.random_range(0.15..0.95),
                rng.random_range(0.15..0.95),
                rng.random_range(0.15..0.95),
            ]
        };
        let (left, right_x) = (-rng.random_range(2.0..3.5), rng.random_range(2.0..3.5));
        let back = rng.random_range(5.0..8.0);
        let wall_h = rng.random_range(2.4..3.2);
        let near = -2.0;
        let mut objects = vec![
            Object {
                shape: Shape::Rect {
                    axis: 1,
                    value: 0.0,
                    lo: [near, left],
                    hi: [back, right_x],
                },
                class: FLOOR,
                albedo: colour(&mut rng),
                texture: rng.random_range(0.0..0.3),
            },
            Object {
                shape: Shape::Rect {
                    axis: 2,
                    value: back,
                    lo: [left, 0.0],
                    hi: [right_x, wall_h],
                },
                class: BACK_WALL,
                albedo: colour(&mut rng),
                texture: rng.random_range(0.0..0.3),
            },
            Object {
                shape: Shape::Rect {
                    axis: 0,
                    value: left,
                    lo: [0.0, near],
                    hi: [wall_h, back],
                },
                class: LEFT_WALL,
                albedo: colour(&mut rng),
                texture: rng.random_range(0.0..0.3),
            },
            Object {
                shape: Shape::Rect {
                    axis: 0,
                    value: right_x,
                    lo: [0.0, near],
                    hi: [wall_h, back],
                },
                class: RIGHT_WALL,
                albedo: colour(&mut rng),
                texture: rng.random_range(0.0..0.3),
            },
        ];
        // Half of the rooms are open at the top: rays that leave give invalid labels.
        if rng.random_bool(0.5) {
            objects.push(Object {
                shape: Shape::Rect {
                    axis: 1,
                    value: wall_h,
                    lo: [near, left],
                    hi: [back, right_x],
                },
                class: CEILING,
                albedo: colour(&mut rng),
                texture: rng.random_range(0.0..0.3),
            });
        }
        let count = rng.random_range(3..=7);
        for _ in 0..count {
            let x = rng.random_range(left + 0.6..right_x - 0.6);
            let z = rng.random_range(1.8..back - 0.6);
            let class = [SPHERE, BOX, CYLINDER, CONE, ELLIPSOID, PILLAR, SLAB][rng.random_range(0..7)];
            let shape = match class {
                SPHERE => {
                    let r = rng.random_range(0.25..0.6);
                    Shape::Sphere {
                        center: [x, r, z],
                        radius: r,
                    }
                }
                BOX => {
                    let half = [
                        rng.random_range(0.2..0.5),
                        rng.random_range(0.2..0.5),
                        rng.random_range(0.2..0.5),
                    ];
                    Shape::Box {
                        center: [x, half[1], z],
                        half,
                        yaw: rng.random_range(0.0..std::f64::consts::PI),
                    }
                }
                CYLINDER => Shape::Cylinder {
                    base: [x, 0.0, z],
                    radius: rng.random_range(0.15..0.4),
                    height: rng.random_range(0.5..1.2),
                },
                CONE => Shape::Cone {
                    base: [x, 0.0, z],
                    radius: rng.random_range(0.25..0.5),
                    height: rng.random_range(0.6..1.4),
                },
                ELLIPSOID => {
                    let radii = [
                        rng.random_range(0.4..0.8),
                        rng.random_range(0.15..0.3),
                        rng.random_range(0.2..0.4),
                    ];
                    Shape::Ellipsoid {
                        center: [x, radii[1], z],
                        radii,
                    }
                }
                PILLAR => {
                    let w = rng.random_range(0.1..0.2);
                    let h = rng.random_range(1.6..2.3);
                    Shape::Box {
                        center: [x, h / 2.0, z],
                        half: [w, h / 2.0, w],
                        yaw: rng.random_range(0.0..std::f64::consts::PI),
                    }
                }
                _ => {
                    let h = rng.random_range(0.06..0.12);
                    let y = rng.random_range(0.5..0.9);
                    Shape::Cylinder {
                        base: [x, y, z],
                        radius: rng.random_range(0.4..0.7),
                        height: h,
                    }
                }
            };
            objects.push(Object {
                shape,
                class,
                albedo: colour(&mut rng),
                texture: rng.random_range(0.0..0.35),
            });
        }
        let camera = Camera {
            position: [
                rng.random_range(-0.5..0.5),
                rng.random_range(1.2..1.7),
                rng.random_range(-1.0..0.0),
            ],
            yaw: rng.random_range(-0.35..0.35),
            pitch: rng.random_range(0.1..0.45),
            focal: 0.0,
        };
        let light = normalize([
            rng.random_range(-1.0..1.0),
            rng.random_range(0.4..1.0),
            rng.random_range(-1.0..0.2),
        ]);
        Scene {
            camera,
            objects,
            light,
            ambient: rng.random_range(0.25..0.5),
            seed,
        }
    }
}

/// Settings of `cut data synth`.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    pub train: usize,
    pub test: usize,
    pub height: usize,
    pub width: usize,
    pub seed: u64,
}

/// Per-scene seed: independent of how many scenes are rendered or on which thread.
fn scene_seed(seed: u64, split: &str, index: usize) -> u64 {
    let salt = if split == "train" {
        0x7472_6169_6e00_0000
    } else {
        0x7465_7374_0000_0000
    };
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
}

/// Renders the scene for `split`/`index` at the given size (focal length: 0.9 x width).
pub fn render_scene(seed: u64, split: &str, index: usize, height: usize, width: usize) -> Rendered {
    let mut scene = Scene::random(scene_seed(seed, split, index));
    scene.camera.focal = 0.9 * width as f64;
    scene.render(height, width)
}

/// Writes a dataset in the NYUv2 3-task layout under `out`. Same config, same bytes.
pub fn write_dataset(out: &Path, config: &SynthConfig, threads: usize) -> Result<()> {
    if config.height < 8 || config.width < 8 {
        crate::usage_bail!("--input {}x{} is too small (at least 8x8)", config.height, config.width);
    }
    if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{}: exists and is not empty; choose a new folder", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let mut index = DatasetIndex::default();
    for (split, count) in [("train", config.train), ("test", config.test)] {
        let jobs: Vec<usize> = (0..count).collect();
        let chunk = count.div_ceil(threads.max(1)).max(1);
        let entries: Vec<Result<Vec<[String; 4]>>> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .chunks(chunk)
                .map(|ids| {
                    s.spawn(move || {
                        ids.iter()
                            .map(|&i| {
                                let r = render_scene(config.seed, split, i, config.height, config.width);
                                let normals: Vec<[u8; 3]> = r.normal.iter().map(|n| encode_normal(*n)).collect();
                                write_sample_files(
                                    out,
                                    split,
                                    i,
                                    config.height,
                                    config.width,
                                    &r.rgb,
                                    &r.class,
                                    &normals,
                                    &r.depth,
                                )
                            })
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("render thread panicked"))
                .collect()
        });
        let mut list = Vec::with_capacity(count);
        for e in entries {
            list.extend(e?);
        }
        if split == "train" {
            index.train = list;
        } else {
            index.test = list;
        }
    }
    let text = serde_json::to_string_pretty(&index)?;
    crate::fsio::write_atomic(&out.join(INDEX_FILE), text.as_bytes())?;
    Ok(())
}
