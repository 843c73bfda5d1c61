//! Host-side bindings of the `portcullis:policy` worlds (generated from
//! `wit/`): `policy-plugin`, which every plugin implements, and
//! `guard-plugin`, whose `ssh-plugin` hooks a plugin may export beside it.

wasmtime::component::bindgen!({
    world: "policy-plugin",
    path: "../wit",
});

pub use portcullis::policy::types;

/// The `guard-plugin` world; only its `ssh-plugin`, `ssh-output` and
/// `http-plugin` exports are used (the rest is the `policy-plugin` world above).
pub mod guard {
    wasmtime::component::bindgen!({
        world: "guard-plugin",
        path: "../wit",
        with: {
            "portcullis:policy/types": super::portcullis::policy::types,
            "portcullis:policy/host": super::portcullis::policy::host,
        },
    });
}

pub use guard::exports::portcullis::policy::ssh_output::Guest as SshOutputGuest;
pub use guard::exports::portcullis::policy::ssh_output::OutputStream;
pub use guard::exports::portcullis::policy::ssh_plugin::Guest as SshGuest;
pub use guard::portcullis::policy::ssh_types;

pub use guard::exports::portcullis::policy::http_plugin::Guest as HttpGuest;
pub use guard::exports::portcullis::policy::http_response::Guest as ResponseGuest;
pub use guard::portcullis::policy::http_types;
