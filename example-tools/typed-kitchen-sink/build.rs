//! Encode the WIT package's doc comments as wit-component's `package-docs`
//! custom section, for `lib.rs` to embed: the component binary format has
//! no place for docs, and wit-bindgen does not carry them (yet).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wit");
    let mut resolve = wit_parser::Resolve::new();
    let (pkg, _) = resolve.push_dir("wit").expect("wit/ parses");
    let docs = wit_parser::PackageMetadata::extract(&resolve, pkg)
        .encode()
        .expect("docs encode");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("package-docs.bin"), docs).expect("write package-docs.bin");
}
