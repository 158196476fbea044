use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    // Embed an rpath to the checkout's libtorch so `cut` runs without LD_LIBRARY_PATH.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{manifest}/.libtorch/torch/lib");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(cut_cuda_shim)");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    // Where tch-sys finds libtorch too (.cargo/config.toml sets LIBTORCH to the checkout's).
    let libtorch = std::env::var_os("LIBTORCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&manifest).join(".libtorch/torch"));
    build_cuda_shim(Path::new(&manifest), &libtorch);
    build_inference_mode(Path::new(&manifest), &libtorch);
}

/// Compiles csrc/inference_mode.cpp (libtorch's InferenceMode guard, which tch does not bind) into
/// a static library linked into cut; its symbols come from libc10, which cut links anyway.
fn build_inference_mode(manifest: &Path, libtorch: &Path) {
    let source = manifest.join("csrc/inference_mode.cpp");
    println!("cargo:rerun-if-changed={}", source.display());
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .include(libtorch.join("include"))
        .warnings(false)
        .file(&source)
        .compile("cut_inference_mode");
}

/// Compiles csrc/cuda_shim.cpp into a shared library that src/device/cuda.rs embeds and loads
/// after libtorch_cuda.so (for what tch does not bind: CUDA graphs, allocator statistics). It links
/// against nothing: its libtorch and CUDA symbols resolve in the process that has loaded those
/// libraries. Without the headers (libtorch's and the CUDA runtime's, from
/// scripts/setup-libtorch.sh) the build goes on without it, and `cut bench --cuda-graph` says so.
fn build_cuda_shim(manifest: &Path, libtorch: &Path) {
    let source = manifest.join("csrc/cuda_shim.cpp");
    println!("cargo:rerun-if-changed={}", source.display());
    let torch_include = libtorch.join("include");
    let cuda_include = libtorch.join("../nvidia/cu13/include");
    let needed = [
        torch_include.join("ATen/cuda/CUDAGraph.h"),
        cuda_include.join("cuda_runtime.h"),
        cuda_include.join("crt/host_config.h"),
    ];
    if let Some(missing) = needed.iter().find(|p| !p.exists()) {
        println!(
            "cargo:warning=building without the CUDA shim (no CUDA graphs): {} is missing (run scripts/setup-libtorch.sh)",
            missing.display()
        );
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("libcut_cuda_shim.so");
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let compiled = Command::new(compiler.path())
        .args(["-std=c++17", "-O2", "-fPIC", "-shared", "-D_GLIBCXX_USE_CXX11_ABI=1"])
        .arg("-isystem")
        .arg(&torch_include)
        .arg("-isystem")
        .arg(&cuda_include)
        .arg(&source)
        .arg("-o")
        .arg(&out)
        .output();
    match compiled {
        Ok(o) if o.status.success() => {
            println!("cargo:rustc-cfg=cut_cuda_shim");
            println!("cargo:rustc-env=CUT_CUDA_SHIM={}", out.display());
        }
        Ok(o) => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let first_error = stderr.lines().find(|l| l.contains("error")).unwrap_or("no message");
            println!(
                "cargo:warning=building without the CUDA shim (no CUDA graphs): compiling {} failed: {first_error}",
                source.display()
            )
        }
        Err(e) => println!(
            "cargo:warning=building without the CUDA shim (no CUDA graphs): could not run {}: {e}",
            compiler.path().display()
        ),
    }
}
