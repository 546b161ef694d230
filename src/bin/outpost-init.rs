//! outpost-init: PID 1 on an Outpost device, or `--host-mode` on a developer
//! machine (unprivileged, DATA in a directory).

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--host-mode") {
        return host_mode(&args);
    }
    outpost::device::board::run()
}

#[cfg(feature = "sim")]
fn host_mode(args: &[String]) -> std::process::ExitCode {
    match outpost::device::host_mode::HostOptions::parse(args) {
        Ok(opts) => outpost::device::host_mode::run(opts),
        Err(e) => {
            eprintln!("outpost-init: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The device image's build: host mode is left out (feature `sim`).
#[cfg(not(feature = "sim"))]
fn host_mode(_args: &[String]) -> std::process::ExitCode {
    eprintln!("outpost-init: this build has no host mode (it was built without the `sim` feature)");
    std::process::ExitCode::from(2)
}
