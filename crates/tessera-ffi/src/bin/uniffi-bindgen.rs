//! uniffi's binding generator, built from the same uniffi version as the library
//! (`scripts/bindings` runs it in library mode on `libtessera_ffi.so`).

fn main() {
    uniffi::uniffi_bindgen_main();
}
