//! Debian packages unpacked by `scripts/fetch-debian-packages` into the cache:
//! `pkgs/<suite>/<requested-name>/` (the files) and
//! `pkgs/<suite>/<requested-name>.lock` (what was fetched: package, version,
//! sha256, suite). One tree per suite: boards may take the same package from
//! different suites (rpi5's kernel comes from trixie-backports).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

/// A lock file is four short lines; anything much larger is not one.
const MAX_LOCK_BYTES: u64 = 4096;

/// The cache root: `$OUTPOST_CACHE`, else `~/.cache/outpost` (the fetch
/// script's rule).
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("OUTPOST_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither OUTPOST_CACHE nor HOME is set: cannot find the package cache")?;
    Ok(PathBuf::from(home).join(".cache/outpost"))
}

/// The command that fetches `requested` from `suite` into the cache.
pub fn fetch_command(suite: &str, requested: &str) -> String {
    format!("scripts/fetch-debian-packages {suite} {requested}")
}

/// One unpacked package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The name the board asked for (`linux-image-arm64`).
    pub requested: String,
    /// The package actually fetched (`linux-image-6.1.0-50-arm64`).
    pub name: String,
    pub version: String,
    /// SHA-256 of the .deb, as in the signed index.
    pub sha256: String,
    pub suite: String,
    /// Where its files are (`root/boot/vmlinuz-…`).
    pub root: PathBuf,
}

impl Package {
    /// Find `requested` (fetched from `suite`) in `cache`; a missing or stale
    /// entry is an error that names the command to run.
    pub fn find(cache: &Path, suite: &str, requested: &str) -> Result<Package> {
        let fetch = || {
            format!(
                "fetch it with `{}` (or run `scripts/setup`)",
                fetch_command(suite, requested)
            )
        };
        for (what, name) in [("package", requested), ("suite", suite)] {
            if name.is_empty() || name.contains(['/', '\0']) || name.starts_with('.') {
                bail!("`{name}` is not a Debian {what} name");
            }
        }
        let pkgs = cache.join("pkgs").join(suite);
        let lock_path = pkgs.join(format!("{requested}.lock"));
        let root = pkgs.join(requested);
        if !lock_path.is_file() || !root.is_dir() {
            bail!(
                "package {requested} ({suite}) is not in the cache {}: {}",
                pkgs.display(),
                fetch()
            );
        }
        let text = read_small(&lock_path, MAX_LOCK_BYTES)?;
        let lock = Lock::parse(&text).with_context(|| format!("{}", lock_path.display()))?;
        if lock.suite != suite {
            bail!(
                "cached {requested} comes from {}, the board needs {suite}: {}",
                lock.suite,
                fetch()
            );
        }
        Ok(Package {
            requested: requested.to_owned(),
            name: lock.package,
            version: lock.version,
            sha256: lock.sha256,
            suite: lock.suite,
            root,
        })
    }

    /// "name version", as recorded in manifests.
    pub fn label(&self) -> String {
        format!("{} {}", self.name, self.version)
    }

    /// A path inside the package; `rel` must stay inside it.
    pub fn file(&self, rel: &str) -> Result<PathBuf> {
        let rel_path = Path::new(rel);
        if rel_path.is_absolute()
            || rel_path
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            bail!(
                "`{rel}` is not a plain relative path inside package {}",
                self.name
            );
        }
        let path = self.root.join(rel_path);
        if !path.is_file() {
            bail!(
                "package {} has no file {rel} (looked at {})",
                self.label(),
                path.display()
            );
        }
        Ok(path)
    }
}

/// The fields of a `.lock` file (`key=value` lines; unknown keys ignored so
/// the script can add more).
#[derive(Debug, PartialEq, Eq)]
struct Lock {
    package: String,
    version: String,
    sha256: String,
    suite: String,
}

impl Lock {
    fn parse(text: &str) -> Result<Lock> {
        let get = |key: &str| -> Result<String> {
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .with_context(|| format!("lock file has no `{key}=` line"))?
                .trim();
            if value.is_empty() || value.contains(char::is_whitespace) {
                bail!("lock file `{key}` is empty or has spaces");
            }
            Ok(value.to_owned())
        };
        let sha256 = get("sha256")?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("lock file sha256 `{sha256}` is not a SHA-256");
        }
        Ok(Lock {
            package: get("package")?,
            version: get("version")?,
            sha256: sha256.to_ascii_lowercase(),
            suite: get("suite")?,
        })
    }
}

/// A kernel package's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// `uname -r` (`6.1.0-50-arm64`).
    pub release: String,
    /// `boot/vmlinuz-<release>` (bookworm), or
    /// `usr/lib/modules/<release>/vmlinuz` (the split kernels of trixie-backports).
    pub image: PathBuf,
    /// `lib/modules/<release>` or `usr/lib/modules/<release>`.
    pub modules_dir: PathBuf,
    /// `usr/lib/linux-image-<release>`: device trees by vendor (`broadcom/`).
    pub dtb_dir: PathBuf,
}

/// Where Debian's kernel packages put the module trees: `lib/modules`
/// until bookworm, `usr/lib/modules` from trixie on (the /usr merge).
const MODULE_ROOTS: [&str; 2] = ["lib/modules", "usr/lib/modules"];

impl Kernel {
    /// The one kernel of `pkg` and its module tree.
    pub fn find(pkg: &Package) -> Result<Kernel> {
        // (release, image) for each kernel image the package holds.
        let mut found: Vec<(String, PathBuf)> = Vec::new();
        let boot = pkg.root.join("boot");
        for name in dir_names(&boot)? {
            if let Some(release) = name.strip_prefix("vmlinuz-") {
                found.push((release.to_owned(), boot.join(&name)));
            }
        }
        for root in MODULE_ROOTS {
            let dir = pkg.root.join(root);
            for release in dir_names(&dir)? {
                let image = dir.join(&release).join("vmlinuz");
                if image.is_file() {
                    found.push((release, image));
                }
            }
        }
        let (release, image) = match found.as_slice() {
            [one] => one.clone(),
            [] => bail!(
                "package {} has no kernel (boot/vmlinuz-* or usr/lib/modules/*/vmlinuz)",
                pkg.label()
            ),
            many => bail!(
                "package {} has several kernels ({}); expected one",
                pkg.label(),
                many.iter()
                    .map(|(r, _)| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let modules_dir = MODULE_ROOTS
            .iter()
            .map(|root| pkg.root.join(root).join(&release))
            .find(|dir| dir.join("kernel").is_dir())
            .with_context(|| {
                format!(
                    "package {}: no kernel/ module tree under {} or {} for {release}",
                    pkg.label(),
                    MODULE_ROOTS[0],
                    MODULE_ROOTS[1]
                )
            })?;
        Ok(Kernel {
            image,
            dtb_dir: pkg
                .root
                .join("usr/lib")
                .join(format!("linux-image-{release}")),
            release,
            modules_dir,
        })
    }
}

/// The names in `dir`; none when it does not exist.
fn dir_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Read a file that must be small (lock files, configs).
pub fn read_small(path: &Path, limit: u64) -> Result<String> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("{}", path.display()))?
        .len();
    if len > limit {
        bail!("{} is {len} bytes, limit {limit}", path.display());
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const SHA: &str = "914f75b57a8e165d85fb910c3e2dcc7000a05a9fea3f42f90b26e8dd590d5f06";

    /// A cache holding linux-image-arm64 of `suite` with `lock`, laid out
    /// as bookworm's package (boot/vmlinuz-*, lib/modules).
    fn fake_cache_in(suite: &str, lock: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let pkgs = dir.path().join("pkgs").join(suite);
        std::fs::create_dir_all(pkgs.join("linux-image-arm64/boot")).unwrap();
        std::fs::create_dir_all(pkgs.join("linux-image-arm64/lib/modules/6.1.0-9-arm64/kernel"))
            .unwrap();
        std::fs::write(
            pkgs.join("linux-image-arm64/boot/vmlinuz-6.1.0-9-arm64"),
            b"x",
        )
        .unwrap();
        std::fs::write(pkgs.join("linux-image-arm64.lock"), lock).unwrap();
        dir
    }

    fn fake_cache(lock: &str) -> tempfile::TempDir {
        fake_cache_in("bookworm", lock)
    }

    #[test]
    fn finds_package_and_kernel() {
        let lock = format!(
            "package=linux-image-6.1.0-9-arm64\nversion=6.1.1-1\nsha256={SHA}\nsuite=bookworm\n"
        );
        let cache = fake_cache(&lock);
        let pkg = Package::find(cache.path(), "bookworm", "linux-image-arm64").unwrap();
        assert_eq!(pkg.label(), "linux-image-6.1.0-9-arm64 6.1.1-1");
        let k = Kernel::find(&pkg).unwrap();
        assert_eq!(k.release, "6.1.0-9-arm64");
        assert!(pkg.file("../x").is_err());
        assert!(pkg.file("boot/vmlinuz-6.1.0-9-arm64").is_ok());
    }

    #[test]
    fn missing_or_stale_package_names_the_command() {
        let cache = tempfile::tempdir().unwrap();
        let err = Package::find(cache.path(), "bookworm", "u-boot-qemu").unwrap_err();
        assert!(
            format!("{err:#}").contains("scripts/fetch-debian-packages bookworm u-boot-qemu"),
            "{err:#}"
        );
        let lock = format!("package=p\nversion=1\nsha256={SHA}\nsuite=trixie\n");
        let cache = fake_cache(&lock);
        let err = Package::find(cache.path(), "bookworm", "linux-image-arm64").unwrap_err();
        assert!(format!("{err:#}").contains("fetch-debian-packages bookworm"));
        let cache = fake_cache("package=p\nversion=1\nsuite=bookworm\n");
        let err = Package::find(cache.path(), "bookworm", "linux-image-arm64").unwrap_err();
        assert!(format!("{err:#}").contains("sha256"));
        // Another suite's copy is not this suite's.
        let err = Package::find(cache.path(), "trixie", "linux-image-arm64").unwrap_err();
        assert!(
            format!("{err:#}").contains("fetch-debian-packages trixie"),
            "{err:#}"
        );
        assert!(Package::find(cache.path(), "../x", "linux-image-arm64").is_err());
    }

    #[test]
    fn a_split_kernel_under_usr_lib_modules_is_found() {
        // trixie-backports: linux-binary-V puts the image beside the modules.
        let lock = format!(
            "package=linux-image-7.3.4+deb13-arm64\nversion=7.3.4-1~bpo13+1\nsha256={SHA}\n\
             suite=trixie-backports\npart=linux-base-7.3.4+deb13-arm64 7.3.4-1~bpo13+1 {SHA}\n"
        );
        let cache = tempfile::tempdir().unwrap();
        let pkgs = cache.path().join("pkgs/trixie-backports");
        let release = pkgs.join("linux-image-arm64/usr/lib/modules/7.3.4+deb13-arm64");
        std::fs::create_dir_all(release.join("kernel")).unwrap();
        std::fs::write(release.join("vmlinuz"), b"x").unwrap();
        std::fs::write(pkgs.join("linux-image-arm64.lock"), lock).unwrap();
        let pkg = Package::find(cache.path(), "trixie-backports", "linux-image-arm64").unwrap();
        let k = Kernel::find(&pkg).unwrap();
        assert_eq!(k.release, "7.3.4+deb13-arm64");
        assert_eq!((k.image, k.modules_dir), (release.join("vmlinuz"), release));
        // No module tree: named.
        std::fs::remove_dir(
            pkgs.join("linux-image-arm64/usr/lib/modules/7.3.4+deb13-arm64/kernel"),
        )
        .unwrap();
        let err = format!("{:#}", Kernel::find(&pkg).unwrap_err());
        assert!(err.contains("no kernel/ module tree"), "{err}");
    }
}
