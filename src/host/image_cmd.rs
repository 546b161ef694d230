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
    #[arg(long, requires = "device")]
    pub force: bool,
    /// With --device: do not read the written blocks back.
    #[arg(long, requires = "device")]
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
