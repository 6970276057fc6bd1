//! # toolhost-package
//!
//! Shipping third-party tools to toolhost: packages as OCI artifacts,
//! registries, cosign-compatible signatures, the operator's trust policy,
//! the grants review, and the local store a host loads installed tools from.
//!
//! ```text
//! pack(dir) ──> Package ──> Layout (dir / .tar)          oci
//!                       └─> Registry::push_package       registry
//! sign: SigningKey ──> SignatureManifest (sha256-<hex>.sig)   sign
//! install(Source) = fetch (verify every digest)           source
//!                 ─> TrustPolicy::verify (keys per name)  trust
//!                    └─ keyless: TrustedRoot::verify      keyless
//!                 ─> grants review vs HostConfig, upgrade diff   grants
//!                 ─> Store (staged, renamed into place)   store
//! ```
//!
//! Modules own one concern each (see their docs). Nothing here loads or
//! runs a component: installed tools are loaded by the host like any tools
//! directory (`toolhost serve --tools <store>`).

#![deny(missing_docs)]

pub mod error;
pub mod grants;
mod http;
pub mod keyless;
pub mod oci;
pub mod pack;
pub mod registry;
pub mod sign;
pub mod source;
pub mod store;
pub mod trust;

pub use crate::error::{Error, Result};
pub use crate::keyless::{KeylessSigner, TrustedRoot};
pub use crate::oci::{Digest, Layout, Package};
pub use crate::pack::{PackOptions, pack};
pub use crate::registry::{Registry, RegistryRef};
pub use crate::sign::{PublicKey, SignatureManifest, SigningKey};
pub use crate::source::{Fetched, Source, fetch};
pub use crate::store::{InstallOptions, Installed, Store};
pub use crate::trust::{Origin, Signer, TrustPolicy};
