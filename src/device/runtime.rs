//! Pieces both modes share: loading the machine config and identity from DATA,
//! starting the API listener, the boot id.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

use smol::{Async, Executor};

use super::api::{self, tls, ApiContext};
use crate::config::{MachineConfig, MAX_CONFIG_BYTES};

/// Read and validate `config/machine.toml` on DATA.
/// A config staged for this boot (`config apply --mode staged`) takes over first.
pub fn load_machine_config(data: &Path) -> Result<MachineConfig, String> {
    use std::io::Read;
    super::config_apply::promote_staged(data);
    let path = data.join(super::config_apply::MACHINE_PATH);
    let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    MachineConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Bind the API port and spawn the server; returns the bound address.
pub fn start_api(
    ex: &Arc<Executor<'static>>,
    data: &Path,
    listen: SocketAddr,
    ctx: Arc<ApiContext>,
) -> Result<SocketAddr, String> {
    let identity = tls::Identity::in_data_dir(data);
    let config = tls::server_config(&identity, ctx.time.clone(), ctx.revocations.clone())
        .map_err(|e| format!("API TLS: {e}"))?;
    let listener = TcpListener::bind(listen).map_err(|e| format!("API: binding {listen}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| format!("API: {e}"))?;
    let listener = Async::new(listener).map_err(|e| format!("API: {e}"))?;
    let acceptor = futures_rustls::TlsAcceptor::from(config);
    ex.spawn(api::serve(ex.clone(), listener, acceptor, ctx))
        .detach();
    Ok(bound)
}

/// A random RFC 4122 v4 id, for host mode (a board uses the kernel's boot_id).
pub fn random_boot_id() -> String {
    let mut b = [0u8; 16];
    // ring's system RNG; on failure fall back to time-derived bytes.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = t.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::bundle::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
