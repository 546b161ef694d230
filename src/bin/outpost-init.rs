//! outpost-init: PID 1 on an Outpost device, or `--host-mode` on a developer
//! machine (unprivileged, DATA in a directory).

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--host-mode") {
        return match outpost::device::host_mode::HostOptions::parse(&args) {
            Ok(opts) => outpost::device::host_mode::run(opts),
            Err(e) => {
                eprintln!("outpost-init: {e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    outpost::device::board::run()
}
