//! Host-side bindings of the `portcullis:policy` world (generated from `wit/`).

wasmtime::component::bindgen!({
    world: "policy-plugin",
    path: "../wit",
});

pub use portcullis::policy::types;
