//! `outpost image …`: the builder's commands plus `personalize`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use super::cli::Format;
use super::{flash, image, local};

#[derive(Subcommand)]
pub enum ImageCommand {
    #[command(flatten)]
    Build(local::ImageCommand),
    /// Put one device's identity and machine config into a generic image of
    /// its site (a new DATA; every other byte as in BASE), to a file or
    /// straight onto a card.
    Personalize(PersonalizeArgs),
}

#[derive(Args)]
pub struct PersonalizeArgs {
    /// A generic image of the site and board (`outpost image build`).
    pub base: PathBuf,
    #[arg(long)]
    pub site: PathBuf,
    /// The device (`outpost gen device --site SITE --hostname NAME`).
    #[arg(long)]
    pub hostname: String,
    /// Output image (a `.bmap` is written beside it).
    #[arg(short = 'o', long = "out", required_unless_present = "device")]
    pub out: Option<PathBuf>,
    /// Write the personalized image onto this card instead (as `outpost
    /// flash`: bmap, verify, the same refusals).
    #[arg(long, conflicts_with = "out")]
    pub device: Option<PathBuf>,
    /// With --device: write even to a device `outpost flash` would refuse.
    #[arg(long)]
    pub force: bool,
    /// With --device: do not read the written blocks back.
    #[arg(long)]
    pub no_verify: bool,
}

pub fn run(cmd: ImageCommand, top: Format) -> Result<()> {
    match cmd {
        ImageCommand::Build(c) => local::image(c, top),
        ImageCommand::Personalize(a) => personalize(a, top),
    }
}

/// Output format: `outpost -o json image personalize …` (`-o` after the
/// subcommand names the output image, as for `image build`).
fn personalize(a: PersonalizeArgs, format: Format) -> Result<()> {
    check_args(&a)?;
    let work;
    let out = match (&a.out, &a.device) {
        (Some(o), None) => o.clone(),
        (None, Some(_)) => {
            work = tempfile::tempdir()?;
            work.path().join(format!("{}.img", a.hostname))
        }
        _ => bail!("give one of -o OUT.img or --device DEV"),
    };
    let report = image::personalize(&a.base, &a.site, &a.hostname, &out)?;
    if let Some(device) = &a.device {
        let bar = flash::progress_bar();
        let flashed = flash::flash(
            &flash::FlashOptions {
                image: &out,
                device,
                bmap: Some(&report.bmap),
                verify: !a.no_verify,
                force: a.force,
            },
            &flash::probe::SystemProbe,
            &bar,
        )?;
        bar.finish_and_clear();
        if format == Format::Json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({ "personalize": report, "flash": flashed })
                )?
            );
            return Ok(());
        }
        println!(
            "personalized {} for `{}` in {:.1} s",
            a.base.display(),
            a.hostname,
            report.elapsed_ms as f64 / 1000.0
        );
        return flash::print_report(&flashed, format);
    }
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "image {} for `{}` (from {}, built for `{}`) in {:.1} s; bmap {} ({} MiB mapped)",
            report.output.display(),
            report.hostname,
            report.base.display(),
            report.base_hostname,
            report.elapsed_ms as f64 / 1000.0,
            report.bmap.display(),
            report.mapped_bytes >> 20
        );
    }
    Ok(())
}

/// Flash options only make sense with a card. (clap's `requires` does not
/// fire when the required argument conflicts with a present one.)
fn check_args(a: &PersonalizeArgs) -> Result<()> {
    if a.device.is_none() && (a.force || a.no_verify) {
        bail!("--force and --no-verify go with --device (they are `outpost flash` options)");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use crate::host::cli::{Cli, Command};

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn personalize_needs_an_output_or_a_device() {
        let base = [
            "outpost",
            "image",
            "personalize",
            "b.img",
            "--site",
            "s",
            "--hostname",
            "h",
        ];
        let parse = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra));
        assert!(parse(&[]).is_err(), "neither -o nor --device");
        assert!(
            parse(&["-o", "x.img", "--device", "/dev/sdb"]).is_err(),
            "both"
        );
        let cli = parse(&["-o", "x.img", "--force"]).unwrap();
        let Command::Image(super::ImageCommand::Personalize(a)) = cli.command else {
            panic!("not personalize")
        };
        assert!(super::check_args(&a).is_err(), "--force only with --device");
        let cli = parse(&["--device", "/dev/sdb", "--force"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Image(super::ImageCommand::Personalize(ref a)) if a.force && a.out.is_none()
        ));
        // `image build` still parses as before.
        let cli = Cli::try_parse_from([
            "outpost",
            "image",
            "build",
            "--site",
            "s",
            "--hostname",
            "h",
            "-o",
            "x.img",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Image(super::ImageCommand::Build(_))
        ));
        let cli =
            Cli::try_parse_from(["outpost", "flash", "a.img", "/dev/sdb", "--no-verify"]).unwrap();
        assert!(matches!(cli.command, Command::Flash(ref f) if f.no_verify && !f.force));
    }
}
