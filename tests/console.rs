//! The web console (`/ui/`) in a real browser: the end-to-end tests in `tests/browser` (Node.js,
//! `playwright-core` pinned by its lockfile) drive Debian's headless Chromium against real node
//! processes of this build, which they start, stop and restart themselves. `scripts/test.sh`
//! installs Chromium and the npm packages; nothing downloads a browser. Every run saves a
//! screenshot of each page (in the target directory); the README shows a set of them
//! (`docs/console/`).

use std::path::Path;

#[test]
fn the_console_works_in_a_real_browser() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "the browser tests' packages are not installed: run `npm ci --prefix tests/browser` \
         (scripts/test.sh does)"
    );
    let chromium = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is not installed at {chromium}: `apt-get install chromium` (scripts/test.sh does)"
    );
    let mut tests: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
        .collect();
    tests.sort();
    assert!(!tests.is_empty(), "no browser tests in {}", dir.display());
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let out = std::process::Command::new("node")
        .args(["--test", "--test-concurrency=1"])
        .args(&tests)
        .current_dir(&dir)
        .env("CONCORD_BIN", env!("CARGO_BIN_EXE_concord"))
        .env("CHROMIUM_BIN", &chromium)
        .env("CONCORD_UI_SCREENSHOTS", &shots)
        // The built-in copy of the console, as users get it.
        .env_remove("CONCORD_CONSOLE_DIR")
        .output()
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(out.status.success(), "browser tests failed");
    assert!(stdout.contains("# fail 0"), "no test may fail");
    assert!(!stdout.contains("# pass 0"), "tests must run");
    for page in [
        "overview",
        "collection",
        "document",
        "conflict",
        "history",
        "live",
        "query",
        "cluster",
        "cluster-down",
        "clients",
    ] {
        let png = shots.join(format!("{page}.png"));
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 1000,
            "no screenshot of the {page} page at {}",
            png.display()
        );
    }
    eprintln!("screenshots: {}", shots.display());
}
