//! The CLI's contexts: which site's credentials to use and which nodes exist.
//! Stored as TOML at `$OUTPOST_CONFIG` or `~/.config/outpost/config.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    #[serde(default)]
    pub current_context: String,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// Site CA certificate that devices' certificates chain to.
    pub ca: PathBuf,
    /// This operator's client certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub current_node: String,
    #[serde(default)]
    pub nodes: BTreeMap<String, Node>,
    /// Reach devices through this MQTT broker (`mqtts://HOST:PORT`) instead
    /// of connecting to them: they call home (docs/callhome.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// The operator's own inventory: device name -> labels, for
    /// `fleet`/`rollout --label L` (the boards know nothing of it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, Vec<String>>,
    /// Through the broker, seal every command (as `--seal`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub seal: bool,
}

impl Context {
    /// Devices that carry `label` in this context's inventory, sorted.
    pub fn labelled(&self, label: &str) -> Vec<String> {
        self.labels
            .iter()
            .filter(|(_, ls)| ls.iter().any(|l| l == label))
            .map(|(d, _)| d.clone())
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// "host:port" to connect to.
    pub address: String,
    /// Name the device's certificate must carry (its hostname).
    pub server_name: String,
}

impl CliConfig {
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("OUTPOST_CONFIG") {
            return PathBuf::from(p);
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("outpost").join("config.toml")
    }

    /// Load, or an empty config if the file does not exist yet.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("parsing CLI config {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading CLI config {}", path.display())),
        }
    }

    /// Write atomically (temp file + rename) so a crash never leaves half a config.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, toml::to_string(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
    }

    pub fn context(&self, name: Option<&str>) -> Result<(&str, &Context)> {
        let name = name.unwrap_or(&self.current_context);
        if name.is_empty() {
            bail!("no current context: create a site with `outpost gen site DIR`");
        }
        let (name, ctx) = self
            .contexts
            .get_key_value(name)
            .ok_or_else(|| anyhow!("no context named `{name}`"))?;
        Ok((name, ctx))
    }

    pub fn context_mut(&mut self, name: Option<&str>) -> Result<&mut Context> {
        let name = name
            .map(str::to_owned)
            .unwrap_or_else(|| self.current_context.clone());
        self.contexts
            .get_mut(&name)
            .ok_or_else(|| anyhow!("no context named `{name}`"))
    }
}

impl Context {
    /// The node to talk to: `-n NAME`, or `-n HOST:PORT` with the server name
    /// taken from a matching node, or the current node.
    pub fn node(&self, name: Option<&str>) -> Result<Node> {
        let name = name.unwrap_or(&self.current_node);
        if name.is_empty() {
            bail!("no node given and no current node: use `-n NODE` or `outpost qemu up`");
        }
        if let Some(node) = self.nodes.get(name) {
            return Ok(node.clone());
        }
        bail!(
            "no node named `{name}` in this context (known: {})",
            self.nodes.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_and_node_lookup() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("c/config.toml");
        let mut cfg = CliConfig::load(&path).unwrap();
        assert!(cfg.context(None).is_err());
        let mut ctx = Context {
            ca: "ca".into(),
            cert: "c".into(),
            key: "k".into(),
            current_node: String::new(),
            nodes: BTreeMap::new(),
            broker: None,
            labels: Default::default(),
            seal: false,
        };
        ctx.nodes.insert(
            "edge".into(),
            Node {
                address: "127.0.0.1:1".into(),
                server_name: "edge".into(),
            },
        );
        ctx.labels
            .insert("b".into(), vec!["north".into(), "canary".into()]);
        ctx.labels.insert("a".into(), vec!["north".into()]);
        assert_eq!(ctx.labelled("north"), ["a", "b"]);
        assert_eq!(ctx.labelled("canary"), ["b"]);
        assert!(ctx.labelled("south").is_empty());
        cfg.contexts.insert("lab".into(), ctx);
        cfg.current_context = "lab".into();
        cfg.save(&path).unwrap();
        let cfg = CliConfig::load(&path).unwrap();
        let (_, ctx) = cfg.context(None).unwrap();
        assert!(ctx.node(None).is_err());
        assert_eq!(ctx.node(Some("edge")).unwrap().address, "127.0.0.1:1");
        assert!(ctx
            .node(Some("nope"))
            .unwrap_err()
            .to_string()
            .contains("edge"));
        std::fs::write(&path, "bogus = 1").unwrap();
        assert!(CliConfig::load(&path).is_err());
    }
}
