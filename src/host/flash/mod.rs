//! `outpost flash IMG DEVICE`: write an image onto an SD card (or a file),
//! only the blocks its bmap maps, then read them back and check them.
//! Refuses a device that looks like the wrong one unless `--force`.
//! See docs/flashing.md.

pub mod probe;
pub mod write;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde::Serialize;

use super::bmap::{self, Bmap};
use super::cli::{Format, FormatArg};
use probe::{Probe, SystemProbe, Target};

#[derive(Args)]
pub struct FlashArgs {
    /// The disk image (`outpost image build` or `image personalize`).
    pub image: PathBuf,
    /// The SD card's whole-disk device (/dev/sdX, /dev/mmcblkN), or a file.
    pub device: PathBuf,
    /// Block map to use (default: IMAGE.bmap when it exists; without one
    /// the whole image is written).
    #[arg(long, value_name = "FILE")]
    pub bmap: Option<PathBuf>,
    /// Do not read the written blocks back.
    #[arg(long)]
    pub no_verify: bool,
    /// Write even to a device that is not removable, is mounted, holds the
    /// running system, is a partition or is too small.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub format: FormatArg,
}

/// What a flash did.
#[derive(Debug, Clone, Serialize)]
pub struct FlashReport {
    pub image: PathBuf,
    pub device: PathBuf,
    pub image_size: u64,
    /// The bmap used, if any.
    pub bmap: Option<PathBuf>,
    pub bytes_written: u64,
    pub bytes_verified: u64,
    pub write_ms: u128,
    pub verify_ms: u128,
    /// Reasons to refuse that `--force` overrode.
    pub forced: Vec<String>,
}

/// Options of one flash (the CLI's, or `image personalize --device`).
pub struct FlashOptions<'a> {
    pub image: &'a Path,
    pub device: &'a Path,
    pub bmap: Option<&'a Path>,
    pub verify: bool,
    pub force: bool,
}

pub fn run(args: FlashArgs, top: Format) -> Result<()> {
    let format = args.format.output.unwrap_or(top);
    let bar = progress_bar();
    let report = flash(
        &FlashOptions {
            image: &args.image,
            device: &args.device,
            bmap: args.bmap.as_deref(),
            verify: !args.no_verify,
            force: args.force,
        },
        &SystemProbe,
        &bar,
    )?;
    bar.finish_and_clear();
    print_report(&report, format)
}

pub fn print_report(r: &FlashReport, format: Format) -> Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    for why in &r.forced {
        eprintln!("warning (--force): {why}");
    }
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let secs = (r.write_ms + r.verify_ms) as f64 / 1000.0;
    println!(
        "flashed {} onto {}: {:.1} MiB of {:.1} MiB written{} ({}), {:.1} s",
        r.image.display(),
        r.device.display(),
        mib(r.bytes_written),
        mib(r.image_size),
        if r.bytes_verified > 0 {
            " and verified"
        } else {
            ", not verified"
        },
        match &r.bmap {
            Some(b) => format!("bmap {}", b.display()),
            None => "no bmap: every block".into(),
        },
        secs
    );
    Ok(())
}

/// Check the device, then write and verify. The probe says what the
/// machine looks like (the real one, or a fake in tests).
pub fn flash(
    opts: &FlashOptions<'_>,
    probe: &dyn Probe,
    bar: &indicatif::ProgressBar,
) -> Result<FlashReport> {
    let image = File::open(opts.image)
        .with_context(|| format!("opening image {}", opts.image.display()))?;
    let image_size = image.metadata()?.len();
    if image_size == 0 {
        bail!("image {} is empty", opts.image.display());
    }
    let (bmap_path, bmap) = load_bmap(opts.image, opts.bmap, image_size)?;

    let (target, refusals) = probe::check(probe, opts.device, image_size)
        .map_err(|why| anyhow::anyhow!("{}: {why}", opts.device.display()))?;
    if !refusals.is_empty() && !opts.force {
        let list: Vec<String> = refusals.iter().map(|r| format!("  - {r}")).collect();
        bail!(
            "refusing to write to {}:\n{}\nCheck the device name (`lsblk`); `--force` writes anyway.",
            opts.device.display(),
            list.join("\n")
        );
    }
    let mut medium = open_target(opts.device, &target, image_size, opts.force)?;
    let pieces = write::pieces(bmap.as_ref(), image_size);
    let total: u64 = pieces.iter().map(|p| p.len).sum();
    bar.set_length(if opts.verify { total * 2 } else { total });
    let copied = write::copy(&image, &mut medium, &pieces, opts.verify, bar)
        .with_context(|| format!("flashing {}", opts.device.display()))?;
    Ok(FlashReport {
        image: opts.image.to_owned(),
        device: opts.device.to_owned(),
        image_size,
        bmap: bmap_path,
        bytes_written: copied.bytes_written,
        bytes_verified: copied.bytes_verified,
        write_ms: copied.write_time.as_millis(),
        verify_ms: copied.verify_time.as_millis(),
        forced: refusals.iter().map(ToString::to_string).collect(),
    })
}

/// The explicit bmap, else `IMAGE.bmap` if present; it must describe an
/// image of this size.
fn load_bmap(
    image: &Path,
    explicit: Option<&Path>,
    image_size: u64,
) -> Result<(Option<PathBuf>, Option<Bmap>)> {
    let path = match explicit {
        Some(p) => p.to_owned(),
        None => {
            let p = bmap::path_for(image);
            if !p.is_file() {
                return Ok((None, None));
            }
            p
        }
    };
    let b = Bmap::read(&path)?;
    if b.image_size != image_size {
        bail!(
            "bmap {} is for an image of {} bytes, {} has {image_size}: not its bmap",
            path.display(),
            b.image_size,
            image.display()
        );
    }
    Ok((Some(path), Some(b)))
}

fn open_target(
    path: &Path,
    target: &Target,
    image_size: u64,
    force: bool,
) -> Result<write::DeviceFile> {
    match target {
        Target::File { .. } => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            if f.metadata()?.len() < image_size {
                f.set_len(image_size)
                    .with_context(|| format!("extending {}", path.display()))?;
            }
            Ok(write::DeviceFile::new(f, None))
        }
        Target::Block { .. } => {
            // O_EXCL on a block device: the kernel refuses it while anything
            // has it mounted or claimed — the last word after our checks.
            let excl = if force {
                0
            } else {
                rustix::fs::OFlags::EXCL.bits()
            };
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(excl as i32)
                .open(path)
                .with_context(|| format!("opening {} (in use?)", path.display()))?;
            let direct = OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
                .open(path)
                .ok();
            Ok(write::DeviceFile::new(f, direct))
        }
    }
}

/// A progress bar on stderr when it is a terminal; hidden otherwise.
pub fn progress_bar() -> indicatif::ProgressBar {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:9} {bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
