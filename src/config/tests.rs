use std::collections::BTreeMap;
use std::path::Path;

use super::*;

mod basics {
    use super::*;

    #[test]
    fn env_overrides_file_and_index_arrays() {
        let dir = std::env::temp_dir().join(format!("wh-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        std::fs::write(
            &p,
            r#"
[server]
listen = "127.0.0.1:1"
[[tenants]]
id = "11111111-1111-1111-1111-111111111111"
credential = { kind = "client_secret", client_id = "c", client_secret_env = "X_SECRET" }
[policy]
hold_expiry = "2h"
"#,
        )
        .unwrap();
        let env: BTreeMap<String, String> = [
            ("WIPEHOOK_SERVER__LISTEN", "127.0.0.1:9"),
            ("WIPEHOOK_POLICY__MAX_TARGETS_PER_RUN", "3"),
            ("WIPEHOOK_POLICY__ALLOWED_DOMAINS", r#"["contoso.com"]"#),
            ("WIPEHOOK_TENANTS__0__WORKSPACES", r#"["/subscriptions/s/resourceGroups/r/providers/Microsoft.OperationalInsights/workspaces/w"]"#),
            ("WIPEHOOK_CLIENT_SECRET", "not-a-key"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let s = Settings::load_from(Some(&p), &env).unwrap();
        assert_eq!(s.settings.server.listen, "127.0.0.1:9");
        assert_eq!(s.settings.policy.max_targets_per_run, 3);
        assert_eq!(s.settings.policy.hold_expiry, Duration::from_secs(7200));
        assert_eq!(s.tenants[0].workspaces.len(), 1);
        assert_eq!(s.settings.policy.allowed_domains, vec!["contoso.com"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let env = BTreeMap::new();
        let bad = |toml: &str| {
            let dir = std::env::temp_dir().join(format!("wh-cfg-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            let p = dir.join("c.toml");
            std::fs::write(&p, toml).unwrap();
            Settings::load_from(Some(&p), &env).unwrap_err()
        };
        assert!(bad("[server]\nlisen = 1").contains("lisen"));
        assert!(bad("[cloud]\nname = \"mars\"").contains("mars"));
        let dod = CloudSettings {
            name: Some("usgov-dod".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(dod.exchange_url, "https://outlook-dod.office365.us");
        assert_eq!(dod.exchange_resource, "https://outlook-dod.office365.us");
        assert_eq!(dod.graph_url, "https://dod-graph.microsoft.us");
        assert!(bad("[policy]\nmode = \"yolo\"").contains("yolo"));
        assert!(bad("[cloud]\nauthority_host = \"http://127.0.0.1:1\"").contains("https"));
        assert!(bad("[store]\nsqlite_synchronous = \"ful\"").contains("ful"));
    }

    #[test]
    fn redaction_and_durations() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        let url = StoreUrl::from("postgres://u:hunter2@h/db");
        assert!(
            !format!("{url} {url:?}").contains("hunter2"),
            "never prints"
        );
        assert_eq!(url.expose(), "postgres://u:hunter2@h/db");
        let store = StoreSettings {
            url,
            ..Default::default()
        };
        assert!(!format!("{store:?}").contains("hunter2"));
        assert_eq!(
            parse_duration("90d").unwrap(),
            Duration::from_secs(90 * 86400)
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
        assert_eq!(format_duration(Duration::from_secs(86400)), "1d");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// docs/config.example.toml loads, and documents every key there is.
    #[test]
    fn the_example_is_valid_and_complete() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let s = Settings::load_from(Some(Path::new(path)), &BTreeMap::new())
            .expect("the example loads");
        assert_eq!(s.tenants.len(), 1);
        let mut full = s.settings.clone();
        full.cloud.extra_ca_file = Some("/x".into());
        full.policy.min_severity = Some(Severity::High);
        full.doctor.canary_upn = Some("canary@contoso.com".into());
        full.tenants[0].canary_upn = Some("canary@contoso.com".into());
        let v = toml::Value::try_from(&full).unwrap();
        let mut missing = vec![];
        fn walk(v: &toml::Value, text: &str, missing: &mut Vec<String>) {
            if let toml::Value::Table(t) = v {
                for (k, child) in t {
                    if !text.contains(&format!("{k} ="))
                        && !text.contains(&format!("[{k}]"))
                        && !text.contains(&format!("[[{k}]]"))
                    {
                        missing.push(k.clone());
                    }
                    walk(child, text, missing);
                }
            } else if let toml::Value::Array(a) = v {
                for c in a {
                    walk(c, text, missing);
                }
            }
        }
        walk(&v, &text, &mut missing);
        assert!(
            missing.is_empty(),
            "keys not documented in docs/config.example.toml: {missing:?}"
        );
    }
}

#[cfg(test)]
mod precedence_tests {
    use super::*;

    #[test]
    fn inline_configuration_wins_over_the_image_default_path() {
        let env: BTreeMap<String, String> = [
            ("WIPEHOOK_CONFIG", "/nonexistent/config.toml"),
            (
                "WIPEHOOK_CONFIG_TOML",
                "[server]\nlisten = \"127.0.0.1:7\"\n",
            ),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let s = Settings::load_from(None, &env).unwrap();
        assert_eq!(s.settings.server.listen, "127.0.0.1:7");
        let only_path: BTreeMap<String, String> = [(
            "WIPEHOOK_CONFIG".to_string(),
            "/nonexistent/config.toml".to_string(),
        )]
        .into_iter()
        .collect();
        assert!(
            Settings::load_from(None, &only_path)
                .unwrap_err()
                .contains("/nonexistent/config.toml")
        );
    }
}

#[cfg(test)]
mod cloud_host_tests {
    use crate::config::{cloud_instance_names, clouds_of_host};

    #[test]
    fn hosts_are_placed_in_their_clouds() {
        assert_eq!(clouds_of_host("graph.microsoft.com"), Some(&["public"][..]));
        assert_eq!(clouds_of_host("Graph.Microsoft.US"), Some(&["usgov"][..]));
        assert!(
            clouds_of_host("login.microsoftonline.us")
                .unwrap()
                .contains(&"usgov-dod")
        );
        assert_eq!(clouds_of_host("127.0.0.1"), None);
        assert_eq!(clouds_of_host("outlook.office365.com.evil.example"), None);
        // Every preset's own hosts are in its cloud.
        for name in ["public", "usgov", "usgov-dod", "china"] {
            let s = crate::config::CloudSettings {
                name: Some(name.into()),
                ..Default::default()
            };
            let c = s.resolve().unwrap();
            for (key, url) in c.endpoints() {
                let host = reqwest::Url::parse(url)
                    .unwrap()
                    .host_str()
                    .unwrap()
                    .to_string();
                assert!(
                    clouds_of_host(&host).is_some_and(|cs| cs.contains(&name)),
                    "{name}: {key} {host}"
                );
            }
            assert!(!cloud_instance_names(name).is_empty());
        }
    }
}
