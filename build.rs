use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    // Embed an rpath to the checkout's libtorch so `cut` runs without LD_LIBRARY_PATH.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{manifest}/.libtorch/torch/lib");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(cut_cuda_graph)");
    build_cuda_graph_shim(Path::new(&manifest));
}

/// Compiles csrc/cuda_graph.cpp into a shared library that src/device/cuda_graph.rs embeds and
/// loads after libtorch_cuda.so (tch has no CUDA graph binding). It links against nothing: its
/// libtorch and CUDA symbols resolve in the process that has loaded those libraries. Without the
/// headers (libtorch's and the CUDA runtime's, from scripts/setup-libtorch.sh) the build goes on
/// without CUDA graphs, and `cut bench --cuda-graph` says so.
fn build_cuda_graph_shim(manifest: &Path) {
    let source = manifest.join("csrc/cuda_graph.cpp");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let libtorch = std::env::var_os("LIBTORCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join(".libtorch/torch"));
    let torch_include = libtorch.join("include");
    let cuda_include = libtorch.join("../nvidia/cu13/include");
    let needed = [
        torch_include.join("ATen/cuda/CUDAGraph.h"),
        cuda_include.join("cuda_runtime.h"),
        cuda_include.join("crt/host_config.h"),
    ];
    if let Some(missing) = needed.iter().find(|p| !p.exists()) {
        println!(
            "cargo:warning=building without CUDA graphs: {} is missing (run scripts/setup-libtorch.sh)",
            missing.display()
        );
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("libcut_cuda_graph.so");
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let status = Command::new(compiler.path())
        .args(["-std=c++17", "-O2", "-fPIC", "-shared", "-D_GLIBCXX_USE_CXX11_ABI=1"])
        .arg("-isystem")
        .arg(&torch_include)
        .arg("-isystem")
        .arg(&cuda_include)
        .arg(&source)
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {
            println!("cargo:rustc-cfg=cut_cuda_graph");
            println!("cargo:rustc-env=CUT_CUDA_GRAPH_SHIM={}", out.display());
        }
        Ok(s) => println!(
            "cargo:warning=building without CUDA graphs: compiling {} failed ({s})",
            source.display()
        ),
        Err(e) => println!(
            "cargo:warning=building without CUDA graphs: could not run {}: {e}",
            compiler.path().display()
        ),
    }
}
