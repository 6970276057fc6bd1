//! The one way the SDK reaches host services (`toolhost:tool/host`).
//!
//! In a component these are the wit-bindgen imports themselves: no
//! wrapper, no cost. Natively there is no host (the generated imports are
//! stubs that abort the process), so the same names go to the fake host
//! [`crate::testing`] installs for the current thread, and panic, naming
//! that module, when none is installed.
//!
//! Every host service the SDK offers goes through here; nothing else
//! imports `bindings::toolhost::tool::host` functions.

pub(crate) use crate::bindings::toolhost::tool::host::{ClientError, ClientRequest};

#[cfg(target_arch = "wasm32")]
pub(crate) use crate::bindings::toolhost::tool::host::{
    cancelled, log, progress, request_client, request_clients, run_as_task,
};

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use crate::testing::shim::{
    cancelled, log, progress, request_client, request_clients, run_as_task,
};
