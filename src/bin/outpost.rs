use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = outpost::host::cli::Cli::parse();
    match outpost::host::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
