//! Kernel modules from the initramfs: the names in `modules.load`, each after
//! its dependencies from `modules.dep`, each once, with `finit_module`.
//!
//! Parsing and planning are pure functions (tested on text); only
//! [`load_from`] touches the kernel, through [`Sys`]. One module that fails is
//! logged and reported; the others still load, except those that need it.

use std::collections::{HashMap, HashSet};

use super::sys::{ModuleLoad, Sys, SysError};

/// Where the module trees live: `/lib/modules/$(uname -r)/`.
pub const MODULES_ROOT: &str = "/lib/modules";

/// `modules.dep` of a full Debian arm64 kernel is ~500 KiB; ours lists a few
/// dozen modules. Anything over 1 MiB is not a depmod output.
pub const MAX_MODULES_DEP_BYTES: usize = 1024 * 1024;
/// `modules.load` names the few modules a board needs.
pub const MAX_MODULES_LOAD_BYTES: usize = 64 * 1024;
/// Debian's `modules.builtin` is ~15 KiB.
pub const MAX_MODULES_BUILTIN_BYTES: usize = 256 * 1024;
/// A module path longer than this is not one depmod wrote (PATH_MAX is 4096,
/// real paths are under 100 bytes).
const MAX_MODULE_PATH: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: SysError },
    #[error("kernel release: {0}")]
    Release(SysError),
    #[error("kernel release `{0}` is not a directory name")]
    BadRelease(String),
    #[error("modules.dep line {line}: {reason}")]
    DepSyntax { line: usize, reason: String },
}

/// What [`load_from`] did: `loaded` holds every module now in the kernel
/// (newly loaded, already loaded, or built in), `failed` each that is not,
/// with the reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    pub failed: Vec<(String, String)>,
}

/// A module's canonical name: the file name without `.ko[.xz|.zst|.gz]`,
/// with `-` as `_` (the kernel's own rule, so `virtio-net` = `virtio_net`).
pub fn module_name(path_or_name: &str) -> String {
    let base = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    let base = [".xz", ".zst", ".gz"]
        .iter()
        .find_map(|ext| base.strip_suffix(ext))
        .unwrap_or(base);
    let base = base.strip_suffix(".ko").unwrap_or(base);
    base.replace('-', "_")
}

/// Names from `modules.load` (one per line; blank lines and `#` comments
/// skipped; anything after the name on a line ignored), normalized, deduplicated.
pub fn parse_modules_load(text: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    text.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| !word.starts_with('#'))
        .map(module_name)
        .filter(|name| seen.insert(name.clone()))
        .collect()
}

/// Names from `modules.builtin` (paths like `kernel/fs/ext4/ext4.ko`).
pub fn parse_modules_builtin(text: &str) -> HashSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(module_name)
        .collect()
}

/// One module in `modules.dep`: its path and its dependencies' paths (the full
/// closure, as depmod writes it: load them in reverse order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepEntry {
    pub path: String,
    pub deps: Vec<String>,
}

/// `modules.dep`, by module name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepTable {
    entries: HashMap<String, DepEntry>,
}

impl DepTable {
    pub fn get(&self, name: &str) -> Option<&DepEntry> {
        self.entries.get(name)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn check_module_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_MODULE_PATH {
        return Err(format!("module path longer than {MAX_MODULE_PATH} bytes"));
    }
    let is_module = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|ext| path.ends_with(ext));
    if !is_module {
        return Err(format!("`{}` is not a .ko file", path.escape_debug()));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(format!("`{}` has a `..` component", path.escape_debug()));
    }
    if module_name(path).is_empty() {
        return Err(format!(
            "`{}` has an empty module name",
            path.escape_debug()
        ));
    }
    Ok(())
}

/// Parse depmod's `modules.dep`: `path: dep-path dep-path …` per line.
pub fn parse_modules_dep(text: &str) -> Result<DepTable, ModuleError> {
    let mut table = DepTable::default();
    for (index, line) in text.lines().enumerate() {
        let syntax = |reason: String| ModuleError::DepSyntax {
            line: index + 1,
            reason,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (path, deps) = line
            .split_once(':')
            .ok_or_else(|| syntax("no `:` after the module path".to_owned()))?;
        let path = path.trim();
        check_module_path(path).map_err(syntax)?;
        let deps: Vec<String> = deps.split_whitespace().map(str::to_owned).collect();
        for dep in &deps {
            check_module_path(dep).map_err(syntax)?;
        }
        // depmod writes each module once; if not, the first line wins.
        table
            .entries
            .entry(module_name(path))
            .or_insert_with(|| DepEntry {
                path: path.to_owned(),
                deps,
            });
    }
    Ok(table)
}

/// One `finit_module` to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    /// As written in modules.dep (relative to the module directory, or absolute).
    pub path: String,
    /// Names of the modules it needs (its whole closure): if one of them failed,
    /// this one is not tried.
    pub needs: Vec<String>,
}

/// The loading order for `wanted`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Wanted modules compiled into the kernel: nothing to load.
    pub builtin: Vec<String>,
    /// Wanted modules neither in modules.dep nor built in.
    pub unknown: Vec<String>,
}

/// Order the loads: each module's dependencies (reverse of depmod's list)
/// before the module, each module once.
pub fn plan(wanted: &[String], table: &DepTable, builtin: &HashSet<String>) -> Plan {
    let mut plan = Plan::default();
    let mut planned = HashSet::new();
    let needs_of = |name: &str| -> Vec<String> {
        table
            .get(name)
            .map(|e| e.deps.iter().map(|d| module_name(d)).collect())
            .unwrap_or_default()
    };
    for name in wanted {
        if builtin.contains(name) {
            plan.builtin.push(name.clone());
            continue;
        }
        let Some(entry) = table.get(name) else {
            plan.unknown.push(name.clone());
            continue;
        };
        for path in entry.deps.iter().rev().chain(std::iter::once(&entry.path)) {
            let dep = module_name(path);
            if builtin.contains(&dep) || !planned.insert(dep.clone()) {
                continue;
            }
            plan.steps.push(Step {
                needs: needs_of(&dep),
                name: dep,
                path: path.clone(),
            });
        }
    }
    plan
}

/// Load the modules of the running kernel: `/lib/modules/$(uname -r)/`.
pub fn load_modules(sys: &dyn Sys) -> Result<LoadReport, ModuleError> {
    let release = sys.kernel_release().map_err(ModuleError::Release)?;
    if release.is_empty() || release.contains('/') || release.starts_with('.') {
        return Err(ModuleError::BadRelease(release.escape_debug().to_string()));
    }
    load_from(sys, &format!("{MODULES_ROOT}/{release}"))
}

fn read_optional(sys: &dyn Sys, path: &str, limit: usize) -> Result<String, ModuleError> {
    match sys.read_to_string(path, limit) {
        Ok(text) => Ok(text),
        Err(e) if e.errno() == Some(super::sys::Errno::ENOENT) => Ok(String::new()),
        Err(source) => Err(ModuleError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Load what `dir/modules.load` names, using `dir/modules.dep` and
/// `dir/modules.builtin`. No `modules.load`: nothing to do.
pub fn load_from(sys: &dyn Sys, dir: &str) -> Result<LoadReport, ModuleError> {
    let wanted = parse_modules_load(&read_optional(
        sys,
        &format!("{dir}/modules.load"),
        MAX_MODULES_LOAD_BYTES,
    )?);
    if wanted.is_empty() {
        return Ok(LoadReport::default());
    }
    let dep_path = format!("{dir}/modules.dep");
    let deps = sys
        .read_to_string(&dep_path, MAX_MODULES_DEP_BYTES)
        .map_err(|source| ModuleError::Read {
            path: dep_path,
            source,
        })?;
    let table = parse_modules_dep(&deps)?;
    let builtin = parse_modules_builtin(&read_optional(
        sys,
        &format!("{dir}/modules.builtin"),
        MAX_MODULES_BUILTIN_BYTES,
    )?);
    Ok(execute(sys, dir, &plan(&wanted, &table, &builtin)))
}

fn execute(sys: &dyn Sys, dir: &str, plan: &Plan) -> LoadReport {
    let mut report = LoadReport {
        loaded: plan.builtin.clone(),
        failed: Vec::new(),
    };
    let mut failed = HashSet::new();
    for step in &plan.steps {
        if let Some(bad) = step.needs.iter().find(|n| failed.contains(*n)) {
            let reason = format!("not tried: it needs {bad}, which failed");
            tracing::error!(module = %step.name, "{reason}");
            failed.insert(step.name.clone());
            report.failed.push((step.name.clone(), reason));
            continue;
        }
        let path = if step.path.starts_with('/') {
            step.path.clone()
        } else {
            format!("{dir}/{}", step.path)
        };
        match sys.finit_module(&path, "") {
            Ok(ModuleLoad::Loaded) => {
                tracing::info!(module = %step.name, "module loaded");
                report.loaded.push(step.name.clone());
            }
            Ok(ModuleLoad::AlreadyLoaded) => {
                tracing::debug!(module = %step.name, "module already loaded");
                report.loaded.push(step.name.clone());
            }
            Err(e) => {
                tracing::error!(module = %step.name, "module failed: {e}");
                failed.insert(step.name.clone());
                report.failed.push((step.name.clone(), e.to_string()));
            }
        }
    }
    for name in &plan.unknown {
        tracing::error!(module = %name, "module not in modules.dep");
        report
            .failed
            .push((name.clone(), "not in modules.dep nor built in".to_owned()));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sys::{Call, Errno, RecordingSys};

    const DEP: &str = "\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/block/virtio_blk.ko:
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
";

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn malformed_modules_dep_is_refused_with_its_line() {
        for (text, line) in [
            ("kernel/a.ko: kernel/b.ko\nkernel/c.ko kernel/d.ko\n", 2),
            ("kernel/a.txt:\n", 1),
            ("kernel/a.ko: ../../etc/shadow.ko\n", 1),
            ("kernel/a.ko: kernel/b.so\n", 1),
            (":\n", 1),
            ("kernel/.ko:\n", 1),
        ] {
            match parse_modules_dep(text) {
                Err(ModuleError::DepSyntax { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let long = format!("kernel/{}.ko:\n", "a".repeat(600));
        assert!(parse_modules_dep(&long).is_err());
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(
            module_name("kernel/drivers/net/virtio_net.ko"),
            "virtio_net"
        );
        assert_eq!(module_name("kernel/x/snd-usb-audio.ko.xz"), "snd_usb_audio");
        assert_eq!(module_name("virtio-net"), "virtio_net");
        assert_eq!(
            parse_modules_load("# boot\n\nvirtio-net\n  virtio_pci  extra\nvirtio_net\n"),
            names(&["virtio_net", "virtio_pci"])
        );
    }

    #[test]
    fn dependencies_load_first_each_once() {
        let table = parse_modules_dep(DEP).unwrap();
        assert_eq!(table.len(), 11);
        let wanted = names(&["virtio_pci", "net_failover", "virtio_net", "ext4"]);
        let plan = plan(&wanted, &table, &HashSet::new());
        let order: Vec<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            order,
            [
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net",
                "crc16",
                "mbcache",
                "jbd2",
                "ext4",
            ]
        );
        assert_eq!(plan.steps[5].needs, names(&["net_failover", "failover"]));
        assert!(plan.unknown.is_empty());
    }

    #[test]
    fn builtin_and_unknown_modules_are_sorted_out() {
        let table = parse_modules_dep(DEP).unwrap();
        let builtin =
            parse_modules_builtin("kernel/lib/crc16.ko\nkernel/drivers/virtio/virtio_mmio.ko\n");
        let plan = plan(&names(&["virtio_mmio", "ext4", "nope"]), &table, &builtin);
        let order: Vec<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["mbcache", "jbd2", "ext4"]);
        assert_eq!(plan.builtin, names(&["virtio_mmio"]));
        assert_eq!(plan.unknown, names(&["nope"]));
    }

    fn sys_with_tree() -> RecordingSys {
        let sys = RecordingSys::new();
        sys.set_kernel_release("6.1.0-50-arm64");
        let dir = "/lib/modules/6.1.0-50-arm64";
        sys.set_file(&format!("{dir}/modules.dep"), DEP);
        sys.set_file(
            &format!("{dir}/modules.load"),
            "virtio_pci\nvirtio_net\nvirtio_blk\nmissing\n",
        );
        sys
    }

    #[test]
    fn a_failed_module_is_reported_and_the_others_load() {
        let sys = sys_with_tree();
        let dir = "/lib/modules/6.1.0-50-arm64";
        sys.fail(
            "finit_module",
            &format!("{dir}/kernel/net/core/failover.ko"),
            Errno::ENOEXEC,
        );
        sys.set_module_loaded(&format!(
            "{dir}/kernel/drivers/virtio/virtio_pci_modern_dev.ko"
        ));
        let report = load_modules(&sys).unwrap();
        assert_eq!(
            report.loaded,
            names(&[
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_pci",
                "virtio_blk"
            ])
        );
        let failed: Vec<&str> = report.failed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            failed,
            ["failover", "net_failover", "virtio_net", "missing"]
        );
        assert!(
            report.failed[0].1.contains("ENOEXEC"),
            "{:?}",
            report.failed
        );
        assert!(
            report.failed[1].1.contains("needs failover"),
            "{:?}",
            report.failed
        );
        // net_failover and virtio_net were never tried.
        let tried = sys
            .calls()
            .into_iter()
            .filter(|c| matches!(c, Call::FinitModule { .. }))
            .count();
        assert_eq!(tried, 5);
    }

    #[test]
    fn missing_or_oversized_files() {
        let sys = RecordingSys::new();
        assert_eq!(load_modules(&sys).unwrap(), LoadReport::default());

        let sys = RecordingSys::new();
        sys.set_file("/lib/modules/6.1.0-test/modules.load", "virtio_net\n");
        assert!(matches!(load_modules(&sys), Err(ModuleError::Read { .. })));

        sys.set_file(
            "/lib/modules/6.1.0-test/modules.dep",
            &"#".repeat(MAX_MODULES_DEP_BYTES + 1),
        );
        let err = load_modules(&sys).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");

        let sys = RecordingSys::new();
        sys.set_kernel_release("../../etc");
        assert!(matches!(
            load_modules(&sys),
            Err(ModuleError::BadRelease(_))
        ));
    }
}
