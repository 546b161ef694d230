//! What changes between two configs, field by field ("network.mode: dhcp -> static").

use std::collections::BTreeMap;

/// Flatten a TOML document into `dotted.key = value` leaves.
fn leaves(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(table) = text.parse::<toml::Table>() {
        walk("", &toml::Value::Table(table), &mut out);
    }
    out
}

fn walk(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                walk(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

/// One changed field: its dotted key and a line saying what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Change {
    pub key: String,
    pub line: String,
}

/// Every added, removed or changed field, sorted by key.
pub(super) fn changes(old: &str, new: &str) -> Vec<Change> {
    let (a, b) = (leaves(old), leaves(new));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let line = match (a.get(k), b.get(k)) {
                (Some(x), Some(y)) if x == y => return None,
                (Some(x), Some(y)) => format!("{k}: {x} -> {y}"),
                (None, Some(y)) => format!("{k}: (unset) -> {y}"),
                (Some(x), None) => format!("{k}: {x} -> (unset)"),
                (None, None) => return None,
            };
            Some(Change {
                key: k.clone(),
                line,
            })
        })
        .collect()
}

/// One line per added, removed or changed field, sorted by key.
pub fn diff(old: &str, new: &str) -> Vec<String> {
    changes(old, new).into_iter().map(|c| c.line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_listed_by_field() {
        let old = "hostname = \"a\"\n[api]\nport = 1\n";
        let new = "hostname = \"b\"\n[api]\nport = 1\n[network]\nmode = \"dhcp\"\n";
        assert_eq!(
            diff(old, new),
            vec![
                "hostname: \"a\" -> \"b\"",
                "network.mode: (unset) -> \"dhcp\""
            ]
        );
        assert!(diff(old, old).is_empty());
        assert_eq!(diff("not toml [", "x = 1").len(), 1);
    }
}
