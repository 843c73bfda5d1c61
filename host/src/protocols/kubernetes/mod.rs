//! Kubernetes API targets (the Kubernetes issue; being built): `kubectl`
//! and client libraries reach an API server through the gateway, which
//! reads every request the way the API server's own authorizer does
//! ([`request`]) before the plugins judge it.
//!
//! - [`request`]: a request's attributes (verb, group, version, resource,
//!   subresource, namespace, name) from its method and URL, as the API
//!   server derives them, and an exec's command and container.
//! - [`status`]: errors as `Status` objects, the way kubectl reads them.
//!
//! Not yet here: the listener, the upstream client with impersonation, the
//! plugin hooks, WebSocket exec and recordings.

pub mod request;
pub mod status;
