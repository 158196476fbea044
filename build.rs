// Embed an rpath to the checkout's libtorch so `cut` runs without LD_LIBRARY_PATH.
fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{manifest}/.libtorch/torch/lib");
    println!("cargo:rerun-if-changed=build.rs");
}
