//! The real-browser check of the record: each note, as the incident's side
//! panel would show it, rendered by headless Chromium 420 px wide. Nothing
//! may overflow horizontally and the verdict line must be visible without
//! scrolling. The HTML and a PNG of every variant are kept under
//! `target/record-notes/` (test artefacts, not in the repository).
//!
//! Chromium is Debian's `chromium` package (`.ci/run` installs it and sets
//! `WIPEHOOK_TEST_BROWSER=required`); without it the check says so and is
//! skipped, unless required.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The width of the incident's comment panel (both portals), in CSS pixels.
pub const PANEL_WIDTH: u32 = 420;
/// How much of the panel shows before any scrolling.
const PANEL_HEIGHT: u32 = 600;

/// One Chromium at a time: two cores, and each run is a whole browser.
static BROWSER: Mutex<()> = Mutex::new(());

fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let d = target.join("record-notes");
    std::fs::create_dir_all(&d).expect("target/record-notes");
    d
}

fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = PathBuf::from(dir).join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// The page: the comment inside a panel as wide as the portal's, in the
/// portals' font, with the browser's default rules for everything else
/// (no word breaking we do not control), and a script that measures.
fn page(note_html: &str) -> String {
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><style>
body {{ margin: 0; font: 14px "Segoe UI", "Segoe UI Web", system-ui, sans-serif; }}
#panel {{ width: {PANEL_WIDTH}px; padding: 12px 16px; box-sizing: border-box; }}
</style></head><body><div id="panel">{note_html}</div>
<script>
const panel = document.getElementById('panel');
const right = panel.getBoundingClientRect().right;
const wide = [];
for (const e of panel.querySelectorAll('*')) {{
  const r = e.getBoundingClientRect();
  if (r.right > right + 0.5) wide.push(e.tagName + ': ' + e.textContent.slice(0, 80));
}}
const verdict = panel.querySelector('p');
const out = {{
  scroll_width: panel.scrollWidth,
  client_width: panel.clientWidth,
  verdict_bottom: verdict ? verdict.getBoundingClientRect().bottom : 1e9,
  height: panel.scrollHeight,
  wide: wide.slice(0, 5),
}};
const pre = document.createElement('pre');
pre.id = 'wipehook-result';
pre.style.display = 'none';
pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script></body></html>"#
    )
}

/// Render one note and assert it fits the panel. `variant` names the files.
pub async fn check_note(variant: &str, note_html: &str) {
    let variant = variant.to_string();
    let html = note_html.to_string();
    tokio::task::spawn_blocking(move || check_blocking(&variant, &html))
        .await
        .expect("browser check");
}

fn check_blocking(variant: &str, note_html: &str) {
    let dir = out_dir();
    let file = dir.join(format!("{variant}.html"));
    std::fs::write(&file, page(note_html)).expect("write the page");
    let Some(browser) = chromium() else {
        let required = std::env::var("WIPEHOOK_TEST_BROWSER").is_ok_and(|v| v == "required");
        assert!(
            !required,
            "WIPEHOOK_TEST_BROWSER=required but no chromium on PATH (apt-get install chromium)"
        );
        eprintln!(
            "SKIPPED browser check of {variant}: no chromium on PATH (apt-get install chromium)"
        );
        return;
    };
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    // A profile of its own (Chromium locks its profile directory).
    let profile = dir.join(format!(".profile-{variant}"));
    let _ = std::fs::remove_dir_all(&profile);
    let url = format!("file://{}", file.display());
    let run = |height: u32, extra: &[String]| {
        let mut c = Command::new(&browser);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--allow-file-access-from-files",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={PANEL_WIDTH},{height}"))
        .args(extra)
        .arg(&url);
        c.output().expect("run chromium")
    };
    let dom = run(PANEL_HEIGHT, &["--dump-dom".into()]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    let json = dom
        .split_once("<pre id=\"wipehook-result\"")
        .and_then(|(_, rest)| rest.split_once('>'))
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(j, _)| {
            j.replace("&quot;", "\"")
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
        })
        .unwrap_or_else(|| panic!("{variant}: chromium gave no measurement: {dom}"));
    let m: serde_json::Value = serde_json::from_str(&json).expect("measurement");
    // The whole note in the picture (the measurement used the panel's height).
    let full = (m["height"].as_f64().unwrap_or(0.0) as u32 + 24).clamp(PANEL_HEIGHT, 16_000);
    let _ = run(
        full,
        &[format!(
            "--screenshot={}",
            dir.join(format!("{variant}.png")).display()
        )],
    );
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        m["scroll_width"].as_f64() <= m["client_width"].as_f64()
            && m["wide"].as_array().is_some_and(|w| w.is_empty()),
        "{variant}: the note overflows the {PANEL_WIDTH} px panel: {m}"
    );
    assert!(
        m["verdict_bottom"].as_f64().unwrap() <= PANEL_HEIGHT as f64,
        "{variant}: the verdict line is not visible without scrolling: {m}"
    );
}

/// The check is not vacuous: a note wider than the panel, and a verdict
/// below the fold, both fail it.
#[test]
fn the_check_catches_a_wide_note_and_a_verdict_below_the_fold() {
    if chromium().is_none() {
        check_blocking("probe-none", "<p><b>V</b></p>"); // skips, or fails if required
        return;
    }
    let wide = format!("<p><b>V</b></p><p>{}</p>", "x".repeat(200));
    assert!(std::panic::catch_unwind(|| check_blocking("probe-too-wide", &wide)).is_err());
    let low = "<div style=\"height: 700px\"></div><p><b>V</b></p>";
    assert!(std::panic::catch_unwind(|| check_blocking("probe-verdict-low", low)).is_err());
    check_blocking("probe-fits", "<p><b>V</b></p><p>a short note</p>");
}
