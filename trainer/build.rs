//! With the `libtorch` feature, the binaries (the trainer's, and the test binaries: the root
//! package builds with this script too) find libtorch where they were built
//! against it (an rpath), so no LD_LIBRARY_PATH is needed to run them.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
