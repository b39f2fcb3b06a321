//! Layering: one TOML file (or inline TOML), then `WIPEHOOK_<SECTION>__<KEY>`
//! environment variables, numeric segments indexing arrays.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Config, Settings};

impl Settings {
    /// Load: file (or inline TOML), then environment overrides, then checks.
    pub fn load(path: Option<&Path>) -> Result<Config, String> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Self::load_from(path, &env)
    }

    pub fn load_from(
        path: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, String> {
        let text = match (
            path,
            env.get("WIPEHOOK_CONFIG"),
            env.get("WIPEHOOK_CONFIG_TOML"),
        ) {
            // --config PATH, then inline content (a container platform's
            // secret), then WIPEHOOK_CONFIG (the image sets a default path).
            (Some(p), _, _) => read(p)?,
            (None, _, Some(inline)) if !inline.trim().is_empty() => inline.clone(),
            (None, Some(p), _) if !p.is_empty() => read(Path::new(p))?,
            _ => String::new(),
        };
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|e| format!("configuration is not valid TOML: {e}"))?;
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("WIPEHOOK_") else {
                continue;
            };
            if !rest.contains("__") {
                continue; // WIPEHOOK_CONFIG, secret variables, ...
            }
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            set_path(&mut table, &path, env_value(v))
                .map_err(|e| format!("environment variable {k}: {e}"))?;
        }
        let settings: Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| format!("configuration: {e}"))?;
        Config::new(settings)
    }
}

fn read(p: &Path) -> Result<String, String> {
    std::fs::read_to_string(p)
        .map_err(|e| format!("cannot read configuration file {}: {e}", p.display()))
}

fn env_value(raw: &str) -> toml::Value {
    // A TOML literal (number, bool, array, inline table) when it parses as one,
    // else the plain string.
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (head, rest) = path.split_first().ok_or("empty key")?;
    if rest.is_empty() {
        table.insert(head.clone(), value);
        return Ok(());
    }
    let entry = table.entry(head.clone()).or_insert_with(|| {
        if rest[0].parse::<usize>().is_ok() {
            toml::Value::Array(vec![])
        } else {
            toml::Value::Table(Default::default())
        }
    });
    set_value_path(entry, rest, value)
}

fn set_value_path(
    node: &mut toml::Value,
    path: &[String],
    value: toml::Value,
) -> Result<(), String> {
    match node {
        toml::Value::Table(t) => set_path(t, path, value),
        toml::Value::Array(a) => {
            let i: usize = path[0]
                .parse()
                .map_err(|_| format!("'{}' is not an array index", path[0]))?;
            while a.len() <= i {
                a.push(toml::Value::Table(Default::default()));
            }
            if path.len() == 1 {
                a[i] = value;
                Ok(())
            } else {
                set_value_path(&mut a[i], &path[1..], value)
            }
        }
        _ => Err(format!("'{}' is not a table", path[0])),
    }
}
