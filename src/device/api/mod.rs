//! The management API: TLS 1.3 with client certificates, postcard frames.
//! `tls` builds the rustls config from the device identity, `server` runs the
//! connections, `handlers` turns one request into one action on the device.

pub mod auth;
pub mod handlers;
pub mod server;
pub mod tls;

pub use handlers::{ApiContext, Platform, PowerRequest};
pub use server::serve;
