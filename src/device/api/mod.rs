//! The management API: TLS 1.3 with client certificates, postcard frames.
//! `tls` builds the rustls config from the device identity, `site_clients`
//! decides which client certificates get in (the site CA, its revocation
//! list), `server` runs the connections, `handlers` turns one request into
//! one action on the device.

pub mod auth;
pub mod handlers;
pub mod server;
pub mod site_clients;
pub mod tls;

pub use handlers::{ApiContext, Platform, PowerRequest};
pub use server::serve;
