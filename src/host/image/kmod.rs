//! Which kernel modules go into the initramfs: the board's modules, their
//! `depends=` closure and their `softdep=` modules, read from each `.ko`'s
//! ELF `.modinfo` section (the Debian package ships no modules.dep). Writes
//! `modules.dep` (depmod's format; each line's order loads every module
//! after what it needs, and equals depmod's on bookworm's kernel — depmod
//! breaks ties by modules.order) and `modules.load`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use object::{Object as _, ObjectSection as _};

/// Real `.modinfo` sections are a few KiB; bound what a broken file can claim.
const MAX_MODINFO: u64 = 1 << 20;
/// Debian's `modules.builtin` is ~15-30 KiB.
const MAX_BUILTIN: u64 = 1 << 20;

/// The module tree of one kernel: `lib/modules/<release>/kernel/**.ko`.
pub(crate) struct Tree {
    dir: PathBuf,
    /// Canonical name → path relative to `dir` (`kernel/fs/ext4/ext4.ko`).
    by_name: BTreeMap<String, String>,
    /// Compressed modules (`.ko.xz` …) by canonical name, to say why they fail.
    compressed: BTreeMap<String, String>,
    /// `modules.builtin` as the package has it (the initramfs carries it for
    /// outpost-init), and the names in it: a board may name a module that
    /// another kernel has as a module (virtio_pci: 6.1 module, 7.x built in).
    builtin_file: Option<Vec<u8>>,
    builtin: BTreeSet<String>,
    /// Aliases the built-in modules provide (`modules.builtin.modinfo`),
    /// read when a soft dependency names an alias.
    builtin_aliases: Option<BTreeSet<String>>,
    aliases: Option<HashMap<String, BTreeSet<String>>>,
}

/// `modinfo` fields the closure needs.
#[derive(Debug, Default, PartialEq, Eq)]
struct Modinfo {
    depends: Vec<String>,
    pre: Vec<String>,
    post: Vec<String>,
    aliases: Vec<String>,
}

/// The modules chosen for an initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selection {
    /// `modules.load`: the board's modules in order, each preceded by the
    /// soft dependencies modprobe would load first (crc32c before ext4).
    pub(crate) load: Vec<String>,
    /// Every included module by canonical name.
    pub(crate) modules: BTreeMap<String, Selected>,
    /// Soft dependencies that name nothing in this kernel (modprobe skips them too).
    pub(crate) warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selected {
    /// Relative to the module directory (`kernel/fs/ext4/ext4.ko`).
    pub(crate) rel_path: String,
    pub(crate) source: PathBuf,
    /// Full dependency closure, nearest first (depmod's order).
    pub(crate) deps: Vec<String>,
}

/// The kernel's rule: `-` and `_` are the same in module names.
pub(crate) fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

impl Tree {
    /// Index `modules_dir/kernel` (file names only; nothing is read yet).
    pub(crate) fn open(modules_dir: &Path) -> Result<Tree> {
        let mut tree = Tree {
            dir: modules_dir.to_owned(),
            by_name: BTreeMap::new(),
            compressed: BTreeMap::new(),
            builtin_file: super::read_optional(&modules_dir.join("modules.builtin"), MAX_BUILTIN)?,
            builtin: BTreeSet::new(),
            builtin_aliases: None,
            aliases: None,
        };
        if let Some(file) = &tree.builtin_file {
            tree.builtin = String::from_utf8_lossy(file)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| canonical(file_stem(l.trim())))
                .collect();
        }
        let mut stack = vec![PathBuf::from("kernel")];
        while let Some(rel) = stack.pop() {
            let abs = modules_dir.join(&rel);
            let mut entries: Vec<_> = std::fs::read_dir(&abs)
                .with_context(|| format!("reading {}", abs.display()))?
                .collect::<std::io::Result<_>>()?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let child = rel.join(name);
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    stack.push(child);
                    continue;
                }
                let Some(rel_str) = child.to_str().map(str::to_owned) else {
                    continue;
                };
                if let Some(stem) = name.strip_suffix(".ko") {
                    // Two files with one name: the first in path order wins, as a
                    // stable rule (Debian's tree has none).
                    tree.by_name.entry(canonical(stem)).or_insert(rel_str);
                } else if let Some(stem) = [".ko.xz", ".ko.zst", ".ko.gz"]
                    .iter()
                    .find_map(|ext| name.strip_suffix(ext))
                {
                    tree.compressed.entry(canonical(stem)).or_insert(rel_str);
                }
            }
        }
        if tree.by_name.is_empty() && tree.compressed.is_empty() {
            bail!("no kernel modules under {}/kernel", modules_dir.display());
        }
        Ok(tree)
    }

    /// The package's `modules.builtin`, if it has one.
    pub(crate) fn modules_builtin(&self) -> Option<&[u8]> {
        self.builtin_file.as_deref()
    }

    /// The path of module `name`, or an error saying why it cannot be used.
    fn path_of(&self, name: &str, wanted_by: &str) -> Result<&str> {
        if let Some(p) = self.by_name.get(name) {
            return Ok(p);
        }
        if let Some(p) = self.compressed.get(name) {
            bail!(
                "module {name} ({wanted_by}) is compressed ({p}): fetch the kernel again with \
                 scripts/fetch-debian-packages, which unpacks .ko.xz modules"
            );
        }
        bail!(
            "module {name} ({wanted_by}) is not in the kernel package ({})",
            self.dir.display()
        )
    }

    fn modinfo(&self, rel: &str) -> Result<Modinfo> {
        let path = self.dir.join(rel);
        let raw = read_modinfo(&path).with_context(|| format!("module {}", path.display()))?;
        Ok(parse_modinfo(&raw))
    }

    /// A built-in module provides `alias` (`NAME.alias=ALIAS` entries of
    /// `modules.builtin.modinfo`, NUL-separated; absent: none).
    fn builtin_provides(&mut self, alias: &str) -> Result<bool> {
        if self.builtin_aliases.is_none() {
            let path = self.dir.join("modules.builtin.modinfo");
            let raw = match std::fs::read(&path) {
                Ok(raw) => raw,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            let aliases = raw
                .split(|&b| b == 0)
                .filter_map(|entry| std::str::from_utf8(entry).ok())
                .filter_map(|entry| entry.split_once(".alias=").map(|(_, a)| a.to_owned()))
                .collect();
            self.builtin_aliases = Some(aliases);
        }
        Ok(self
            .builtin_aliases
            .as_ref()
            .is_some_and(|a| a.contains(alias)))
    }

    /// Modules that provide `alias` (exact aliases only; device-match
    /// patterns like `pci:v*` never name a soft dependency).
    fn providers(&mut self, alias: &str) -> Result<BTreeSet<String>> {
        if self.aliases.is_none() {
            let mut index: HashMap<String, BTreeSet<String>> = HashMap::new();
            for (name, rel) in &self.by_name {
                for a in self.modinfo(rel)?.aliases {
                    if !a.contains(['*', '?', '[']) {
                        index.entry(a).or_default().insert(name.clone());
                    }
                }
            }
            self.aliases = Some(index);
        }
        Ok(self
            .aliases
            .as_ref()
            .and_then(|idx| idx.get(alias))
            .cloned()
            .unwrap_or_default())
    }

    /// Choose the modules for `wanted` (the board's list, in load order).
    pub(crate) fn select(&mut self, wanted: &[String]) -> Result<Selection> {
        let mut sel = Selection {
            load: Vec::new(),
            modules: BTreeMap::new(),
            warnings: Vec::new(),
        };
        let mut infos: BTreeMap<String, Modinfo> = BTreeMap::new();
        for want in wanted {
            let name = canonical(want);
            if self.builtin.contains(&name) && !self.by_name.contains_key(&name) {
                // Nothing to load; outpost-init finds it in modules.builtin.
                if !sel.load.contains(&name) {
                    sel.load.push(name);
                }
                continue;
            }
            let mut before = Vec::new();
            let mut after = Vec::new();
            // The module's hard closure, then the soft dependencies of all of it.
            let closure = self.close(&name, "named by the board", &mut infos, &mut sel)?;
            for member in closure.iter().chain(std::iter::once(&name)) {
                let (pre, post) = match infos.get(member) {
                    Some(info) => (info.pre.clone(), info.post.clone()),
                    None => continue,
                };
                for (list, out) in [(pre, &mut before), (post, &mut after)] {
                    for soft in list {
                        for provider in self.resolve_soft(&soft, member, &mut sel)? {
                            self.close(
                                &provider,
                                &format!("soft dependency of {member}"),
                                &mut infos,
                                &mut sel,
                            )?;
                            out.push(provider);
                        }
                    }
                }
            }
            for m in before.into_iter().chain(std::iter::once(name)).chain(after) {
                if !sel.load.contains(&m) {
                    sel.load.push(m);
                }
            }
        }
        Ok(sel)
    }

    /// A soft dependency names a module or an alias.
    fn resolve_soft(&mut self, soft: &str, of: &str, sel: &mut Selection) -> Result<Vec<String>> {
        let name = canonical(soft);
        if self.by_name.contains_key(&name) || self.compressed.contains_key(&name) {
            return Ok(vec![name]);
        }
        if self.builtin.contains(&name) || self.builtin_provides(soft)? {
            return Ok(Vec::new());
        }
        let providers: Vec<String> = self.providers(soft)?.into_iter().collect();
        if providers.is_empty() {
            let w = format!("soft dependency `{soft}` of {of} is not in this kernel; skipped");
            if !sel.warnings.contains(&w) {
                sel.warnings.push(w);
            }
        }
        Ok(providers)
    }

    /// Add `name` and its `depends=` closure to the selection; returns the
    /// closure (without `name`), nearest first.
    fn close(
        &self,
        name: &str,
        wanted_by: &str,
        infos: &mut BTreeMap<String, Modinfo>,
        sel: &mut Selection,
    ) -> Result<Vec<String>> {
        if let Some(done) = sel.modules.get(name) {
            return Ok(done.deps.iter().map(|p| canonical(file_stem(p))).collect());
        }
        // Post-order DFS: each module after everything it needs; reversed,
        // that is depmod's "nearest first" list.
        let mut order = Vec::new();
        let mut on_path = Vec::new();
        self.visit(name, wanted_by, infos, &mut on_path, &mut order)?;
        for member in &order {
            if sel.modules.contains_key(member) {
                continue;
            }
            // The closure of `member` is what it reaches; recompute per member
            // so each line lists exactly its own dependencies.
            let mut own = Vec::new();
            self.visit(member, wanted_by, infos, &mut Vec::new(), &mut own)?;
            own.pop(); // itself
            let deps = own
                .iter()
                .rev()
                .map(|d| self.path_of(d, wanted_by).map(str::to_owned))
                .collect::<Result<Vec<_>>>()?;
            let rel = self.path_of(member, wanted_by)?.to_owned();
            sel.modules.insert(
                member.clone(),
                Selected {
                    source: self.dir.join(&rel),
                    rel_path: rel,
                    deps,
                },
            );
        }
        let mut closure = order;
        closure.pop(); // `name` itself is last
        closure.reverse();
        Ok(closure)
    }

    fn visit(
        &self,
        name: &str,
        wanted_by: &str,
        infos: &mut BTreeMap<String, Modinfo>,
        on_path: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        if order.iter().any(|m| m == name) {
            return Ok(());
        }
        if on_path.iter().any(|m| m == name) {
            bail!(
                "module dependency cycle: {} -> {name}",
                on_path.join(" -> ")
            );
        }
        let rel = self.path_of(name, wanted_by)?.to_owned();
        if !infos.contains_key(name) {
            infos.insert(name.to_owned(), self.modinfo(&rel)?);
        }
        let deps = infos
            .get(name)
            .map(|i| i.depends.clone())
            .unwrap_or_default();
        on_path.push(name.to_owned());
        for dep in deps {
            self.visit(
                &canonical(&dep),
                &format!("needed by {name}"),
                infos,
                on_path,
                order,
            )?;
        }
        on_path.pop();
        order.push(name.to_owned());
        Ok(())
    }
}

impl Selection {
    /// depmod's format: `kernel/a.ko: kernel/b.ko kernel/c.ko`, one line per
    /// included module, in path order.
    pub(crate) fn modules_dep(&self) -> String {
        let mut lines: Vec<String> = self
            .modules
            .values()
            .map(|m| {
                let mut line = format!("{}:", m.rel_path);
                for d in &m.deps {
                    line.push(' ');
                    line.push_str(d);
                }
                line
            })
            .collect();
        lines.sort();
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    pub(crate) fn modules_load(&self) -> String {
        self.load.iter().map(|m| format!("{m}\n")).collect()
    }
}

fn file_stem(rel: &str) -> &str {
    let base = rel.rsplit('/').next().unwrap_or(rel);
    base.strip_suffix(".ko").unwrap_or(base)
}

/// The raw `.modinfo` section of an ELF module, reading only the headers and
/// that section.
fn read_modinfo(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let cache = object::ReadCache::new(file);
    let elf = object::File::parse(&cache).map_err(|e| anyhow::anyhow!("not an ELF module: {e}"))?;
    let Some(section) = elf.section_by_name(".modinfo") else {
        bail!("no .modinfo section");
    };
    if section.size() > MAX_MODINFO {
        bail!(".modinfo is {} bytes, limit {MAX_MODINFO}", section.size());
    }
    let data = section
        .data()
        .map_err(|e| anyhow::anyhow!("reading .modinfo: {e}"))?;
    Ok(data.to_vec())
}

/// `key=value\0` strings; `depends=a,b`, `softdep=pre: x y post: z`, `alias=…`.
fn parse_modinfo(raw: &[u8]) -> Modinfo {
    let mut info = Modinfo::default();
    for entry in raw.split(|&b| b == 0) {
        let Ok(text) = std::str::from_utf8(entry) else {
            continue;
        };
        let Some((key, value)) = text.split_once('=') else {
            continue;
        };
        match key {
            "depends" => info.depends.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(str::to_owned),
            ),
            "softdep" => {
                let mut into_pre = None;
                for word in value.split_whitespace() {
                    match word {
                        "pre:" => into_pre = Some(true),
                        "post:" => into_pre = Some(false),
                        w => match into_pre {
                            Some(true) => info.pre.push(w.to_owned()),
                            Some(false) => info.post.push(w.to_owned()),
                            None => {}
                        },
                    }
                }
            }
            "alias" => info.aliases.push(value.to_owned()),
            _ => {}
        }
    }
    info
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 relocatable whose only content is a `.modinfo` section.
    pub(crate) fn fake_ko(modinfo: &str) -> Vec<u8> {
        let info = modinfo.replace('\n', "\0");
        let info = info.as_bytes();
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let info_off = 64u64;
        let str_off = info_off + info.len() as u64;
        let sh_off = (str_off + shstrtab.len() as u64 + 7) & !7;
        let mut f = Vec::new();
        f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&1u16.to_le_bytes()); // ET_REL
        f.extend_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&0u64.to_le_bytes()); // entry
        f.extend_from_slice(&0u64.to_le_bytes()); // phoff
        f.extend_from_slice(&sh_off.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes()); // flags
        for v in [64u16, 0, 0, 64, 3, 2] {
            f.extend_from_slice(&v.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
        }
        f.extend_from_slice(info);
        f.extend_from_slice(shstrtab);
        f.resize(sh_off as usize, 0);
        let mut sh = |name: u32, kind: u32, flags: u64, off: u64, size: u64| {
            f.extend_from_slice(&name.to_le_bytes());
            f.extend_from_slice(&kind.to_le_bytes());
            f.extend_from_slice(&flags.to_le_bytes());
            f.extend_from_slice(&0u64.to_le_bytes()); // addr
            f.extend_from_slice(&off.to_le_bytes());
            f.extend_from_slice(&size.to_le_bytes());
            f.extend_from_slice(&0u32.to_le_bytes()); // link
            f.extend_from_slice(&0u32.to_le_bytes()); // info
            f.extend_from_slice(&1u64.to_le_bytes()); // addralign
            f.extend_from_slice(&0u64.to_le_bytes()); // entsize
        };
        sh(0, 0, 0, 0, 0);
        sh(1, 1, 2, info_off, info.len() as u64);
        sh(10, 3, 0, str_off, shstrtab.len() as u64);
        f
    }

    /// A fake module tree shaped like Debian's (names and dependencies of
    /// the qemu-virt modules).
    pub(crate) fn fake_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mods: &[(&str, &str)] = &[
            (
                "drivers/virtio/virtio_pci.ko",
                "depends=virtio_pci_modern_dev,virtio_pci_legacy_dev",
            ),
            ("drivers/virtio/virtio_pci_modern_dev.ko", "depends="),
            ("drivers/virtio/virtio_pci_legacy_dev.ko", "depends="),
            ("drivers/block/virtio_blk.ko", "depends="),
            ("drivers/net/virtio_net.ko", "depends=net_failover"),
            ("drivers/net/net_failover.ko", "depends=failover"),
            ("net/core/failover.ko", "depends="),
            (
                "fs/ext4/ext4.ko",
                "softdep=pre: crypto-crc32c\ndepends=jbd2,mbcache,crc16",
            ),
            ("fs/jbd2/jbd2.ko", "softdep=pre: crypto-crc32c\ndepends="),
            ("fs/mbcache.ko", "depends="),
            ("lib/crc16.ko", "depends="),
            (
                "crypto/crc32c_generic.ko",
                "alias=crypto-crc32c\nalias=crc32c\ndepends=",
            ),
            (
                "drivers/watchdog/i6300esb.ko",
                "alias=pci:v00008086d000025ABsv*sd*bc*sc*i*\ndepends=",
            ),
            ("drivers/misc/loop_a.ko", "depends=loop_b"),
            ("drivers/misc/loop_b.ko", "depends=loop-a"),
        ];
        for (rel, info) in mods {
            let path = dir.path().join("kernel").join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, fake_ko(&format!("license=GPL\n{info}\n"))).unwrap();
        }
        std::fs::write(dir.path().join("kernel/lib/packed.ko.xz"), b"xz").unwrap();
        dir
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_modinfo_of_fake_elf() {
        let raw = read_modinfo_bytes(&fake_ko("depends=a,b-c\nsoftdep=pre: x y post: z\nalias=q"));
        let info = parse_modinfo(&raw);
        assert_eq!(info.depends, names(&["a", "b-c"]));
        assert_eq!((info.pre, info.post), (names(&["x", "y"]), names(&["z"])));
        assert_eq!(info.aliases, names(&["q"]));
    }

    fn read_modinfo_bytes(ko: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.ko");
        std::fs::write(&p, ko).unwrap();
        read_modinfo(&p).unwrap()
    }

    #[test]
    fn built_in_modules_are_named_but_not_packed() {
        // A newer kernel: virtio_pci and the crc32c provider built in.
        let dir = fake_tree();
        std::fs::remove_file(dir.path().join("kernel/drivers/virtio/virtio_pci.ko")).unwrap();
        std::fs::write(
            dir.path().join("modules.builtin"),
            "kernel/drivers/virtio/virtio_pci.ko\nkernel/crypto/crc32c-generic.ko\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("modules.builtin.modinfo"),
            b"virtio_pci.license=GPL\0crc32c_generic.alias=crypto-crc32c\0crc32c_generic.alias=crc32c\0",
        )
        .unwrap();
        std::fs::remove_file(dir.path().join("kernel/crypto/crc32c_generic.ko")).unwrap();
        let mut tree = Tree::open(dir.path()).unwrap();
        let sel = tree
            .select(&names(&["virtio_pci", "virtio_blk", "ext4", "virtio_pci"]))
            .unwrap();
        assert_eq!(sel.load, names(&["virtio_pci", "virtio_blk", "ext4"]));
        assert!(!sel.modules.contains_key("virtio_pci"));
        assert!(!sel.modules_dep().contains("virtio_pci.ko"));
        // A soft dependency on a built-in alias provider: nothing to add.
        assert!(
            sel.warnings.iter().all(|w| !w.contains("crc32c")),
            "{:?}",
            sel.warnings
        );
        // Neither a file nor built in: still an error naming it.
        let err = format!("{:#}", tree.select(&names(&["nope"])).unwrap_err());
        assert!(err.contains("module nope"), "{err}");
    }

    #[test]
    fn closure_dep_order_and_softdeps() {
        let dir = fake_tree();
        let mut tree = Tree::open(dir.path()).unwrap();
        let sel = tree
            .select(&names(&[
                "virtio_pci",
                "virtio-blk",
                "virtio_net",
                "ext4",
                "i6300esb",
            ]))
            .unwrap();
        assert_eq!(
            sel.load,
            names(&[
                "virtio_pci",
                "virtio_blk",
                "virtio_net",
                "crc32c_generic",
                "ext4",
                "i6300esb"
            ])
        );
        assert_eq!(sel.modules.len(), 13);
        let dep = sel.modules_dep();
        for line in [
            "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n",
            "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko\n",
            "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n",
            "kernel/crypto/crc32c_generic.ko:\n",
        ] {
            assert!(dep.contains(line), "{line} not in\n{dep}");
        }
        assert!(!dep.contains("loop_a"));
    }

    #[test]
    fn errors_name_the_module() {
        let dir = fake_tree();
        let mut tree = Tree::open(dir.path()).unwrap();
        let err = format!("{:#}", tree.select(&names(&["nosuch"])).unwrap_err());
        assert!(err.contains("nosuch"), "{err}");
        let err = format!("{:#}", tree.select(&names(&["packed"])).unwrap_err());
        assert!(err.contains("compressed"), "{err}");
        let err = format!("{:#}", tree.select(&names(&["loop_a"])).unwrap_err());
        assert!(err.contains("cycle"), "{err}");
    }

    /// Against the real Debian kernel (after `scripts/setup`): our lines are
    /// exactly depmod's for the modules we include.
    #[test]
    fn real_kernel_matches_depmod() {
        use crate::host::image::tests::{cached_kernel_of, qemu_board, repo};
        // bookworm's kernel (plain .ko under lib/modules) and the rpi5's
        // trixie-backports kernel (.ko.xz unpacked by the fetch script,
        // under usr/lib/modules).
        let rpi5 = crate::host::board::Board::load(&repo().join("boards"), "rpi5").unwrap();
        let cases: [(_, &[&str]); 2] = [
            (
                qemu_board(),
                &[
                    "virtio_pci_modern_dev",
                    "failover",
                    "crc16",
                    "crc32c_generic",
                    "i6300esb",
                ],
            ),
            (
                rpi5,
                &[
                    "sdhci_pltfm",
                    "cqhci",
                    "jbd2",
                    "phylink",
                    "xhci_hcd",
                    "usbnet",
                ],
            ),
        ];
        for (board, expected) in cases {
            let Some((pkg, kernel)) = cached_kernel_of(&board) else {
                continue;
            };
            let mut tree = Tree::open(&kernel.modules_dir).unwrap();
            let sel = tree.select(&board.modules).unwrap();
            for m in expected {
                assert!(sel.modules.contains_key(*m), "{}: {m} missing", board.name);
            }
            // depmod -b BASE reads BASE/lib/modules/RELEASE.
            let base = kernel
                .modules_dir
                .parent()
                .and_then(Path::parent)
                .and_then(Path::parent)
                .unwrap();
            assert!(base.starts_with(&pkg.root));
            let out = std::process::Command::new("depmod")
                .arg("-b")
                .arg(base)
                .arg("-n")
                .arg(&kernel.release)
                .output();
            let Ok(out) = out else {
                eprintln!("SKIP depmod comparison: depmod (kmod) not installed");
                return;
            };
            let theirs = String::from_utf8_lossy(&out.stdout);
            assert!(
                theirs.lines().count() > 1000,
                "{}: depmod said {theirs}",
                board.name
            );
            let split = |line: &str| {
                let (m, deps) = line.split_once(':').unwrap();
                (
                    m.to_owned(),
                    deps.split_whitespace()
                        .map(str::to_owned)
                        .collect::<Vec<_>>(),
                )
            };
            // `-n` prints every file depmod writes; modules.dep's lines are these.
            let depmod: HashMap<String, Vec<String>> = theirs
                .lines()
                .filter(|l| l.split_once(':').is_some_and(|(m, _)| m.ends_with(".ko")))
                .map(split)
                .collect();
            let ours: HashMap<String, Vec<String>> = sel.modules_dep().lines().map(split).collect();
            for (m, deps) in &ours {
                // The same dependencies as depmod finds...
                let mut a = deps.clone();
                let mut b = depmod
                    .get(m)
                    .unwrap_or_else(|| panic!("depmod has no {m}"))
                    .clone();
                a.sort();
                b.sort();
                assert_eq!(a, b, "{}: dependencies of {m}", board.name);
                // ...in an order that loads (farthest first, as modprobe
                // does) each one after everything it needs.
                for (i, d) in deps.iter().enumerate() {
                    for dd in &ours[d] {
                        let at = deps.iter().position(|x| x == dd).unwrap();
                        assert!(at > i, "{}: {m}: {d} needs {dd}", board.name);
                    }
                }
            }
            // depmod breaks ties by modules.order; on bookworm's kernel the
            // lines are the same, byte for byte.
            if board.name == "qemu-virt" {
                for line in sel.modules_dep().lines() {
                    assert!(
                        theirs.lines().any(|l| l == line),
                        "depmod differs for {line}"
                    );
                }
            }
        }
    }
}
