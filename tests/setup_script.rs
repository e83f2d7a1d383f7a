//! `scripts/needs.sh`, the detection half of `scripts/setup.sh`, run against fake machines: a dpkg
//! database of our own and a PATH holding only the programs we choose. It must ask for the exact
//! packages the build uses, and never take a look-alike (the libclang C++ wrapper a fresh machine
//! ships, a `node` too old) for the real thing.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fake machine: a dpkg database and a directory that is the whole PATH.
struct FakeMachine {
    dir: tempfile::TempDir,
}

impl FakeMachine {
    /// `packages` are recorded as installed; `bin` starts with only what `needs.sh` itself runs.
    fn new(packages: &[&str]) -> FakeMachine {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = dir.path().join("dpkg");
        std::fs::create_dir_all(admin.join("info")).expect("dpkg dir");
        std::fs::create_dir_all(admin.join("updates")).expect("dpkg dir");
        let mut status = String::new();
        for p in packages {
            status.push_str(&format!(
                "Package: {p}\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n\
                 Maintainer: test\nDescription: test\n\n"
            ));
        }
        std::fs::write(admin.join("status"), status).expect("status");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        let machine = FakeMachine { dir };
        for tool in ["bash", "dpkg-query"] {
            machine.link(tool);
        }
        machine
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// Makes this machine's real `tool` available on the fake PATH.
    fn link(&self, tool: &str) {
        let out = Command::new("bash")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .expect("command -v");
        let real = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!real.is_empty(), "{tool} is not installed here");
        symlink(real, self.bin().join(tool)).expect("symlink");
    }

    /// A program on the fake PATH that runs `script` (a bash body).
    fn stub(&self, name: &str, script: &str) {
        let path = self.bin().join(name);
        std::fs::write(&path, format!("#!{}\n{script}\n", self.bash())).expect("stub");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn bash(&self) -> String {
        std::fs::read_link(self.bin().join("bash"))
            .expect("bash link")
            .display()
            .to_string()
    }

    /// A file in the fake root (only to show that look-alike files do not count).
    fn file(&self, path: &str) {
        let p = self.dir.path().join("root").join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
        std::fs::write(p, b"").expect("file");
    }

    /// The packages `needs.sh` says this machine lacks.
    fn needs(&self) -> Vec<String> {
        self.needs_with(&[])
    }

    /// The same, with arguments (`--tests`).
    fn needs_with(&self, args: &[&str]) -> Vec<String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/needs.sh");
        let out = Command::new(self.bash())
            .arg(script)
            .args(args)
            .env_clear()
            .env("PATH", self.bin())
            .env("CONCORD_SETUP_DPKG_ADMINDIR", self.dir.path().join("dpkg"))
            .output()
            .expect("run needs.sh");
        assert!(
            out.status.success(),
            "needs.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Working Node.js 20, npm and a Python with venv.
    fn with_good_programs(self) -> FakeMachine {
        self.stub("node", "exit 0");
        self.stub("npm", "echo 10.0.0");
        self.stub("python3", "exit 0");
        self
    }
}

/// What a fresh machine of the project's kind has: a C/C++ toolchain, curl, Node.js, Python, and
/// the libclang *C++* library (`libclang-cpp14`) but not libclang itself.
const FRESH_IMAGE: &[&str] = &[
    "build-essential",
    "pkg-config",
    "curl",
    "ca-certificates",
    "libclang-cpp14",
    "libllvm14",
];

#[test]
fn fresh_image_without_libclang_gets_libclang_dev() {
    let m = FakeMachine::new(FRESH_IMAGE).with_good_programs();
    // The files that fooled the old glob (`/usr/lib/llvm-*/lib/libclang*.so*`).
    m.file("usr/lib/llvm-14/lib/libclang-cpp.so.14");
    m.file("usr/lib/x86_64-linux-gnu/libclang-cpp.so.14");
    assert_eq!(m.needs(), vec!["libclang-dev".to_string()]);
}

#[test]
fn a_complete_machine_needs_nothing() {
    let mut packages = FRESH_IMAGE.to_vec();
    packages.push("libclang-dev");
    let m = FakeMachine::new(&packages).with_good_programs();
    assert_eq!(m.needs(), Vec::<String>::new());
}

/// Chromium only for the tests, and only Debian's package counts (not a `chromium` command).
#[test]
fn the_tests_also_need_debians_chromium() {
    let mut packages = FRESH_IMAGE.to_vec();
    packages.push("libclang-dev");
    let m = FakeMachine::new(&packages).with_good_programs();
    m.stub("chromium", "exit 0");
    assert_eq!(m.needs_with(&["--tests"]), vec!["chromium".to_string()]);
    packages.push("chromium");
    let m = FakeMachine::new(&packages).with_good_programs();
    assert_eq!(m.needs_with(&["--tests"]), Vec::<String>::new());
}

#[test]
fn pkgconf_stands_in_for_pkg_config() {
    let packages: Vec<&str> = FRESH_IMAGE
        .iter()
        .copied()
        .filter(|p| *p != "pkg-config")
        .chain(["pkgconf", "libclang-dev"])
        .collect();
    let m = FakeMachine::new(&packages).with_good_programs();
    assert_eq!(m.needs(), Vec::<String>::new());
}

#[test]
fn compilers_on_path_do_not_stand_in_for_the_toolchain_package() {
    // `cc` and `c++` without build-essential: libc headers or make may be missing.
    let m = FakeMachine::new(&["libclang-dev", "pkg-config", "curl", "ca-certificates"])
        .with_good_programs();
    m.stub("cc", "exit 0");
    m.stub("c++", "exit 0");
    assert_eq!(m.needs(), vec!["build-essential".to_string()]);
}

#[test]
fn missing_or_old_node_and_npm_are_installed() {
    let mut packages = FRESH_IMAGE.to_vec();
    packages.push("libclang-dev");
    let m = FakeMachine::new(&packages);
    m.stub("python3", "exit 0");
    assert_eq!(m.needs(), vec!["nodejs".to_string(), "npm".to_string()]);
    // A node that exists but is older than 18 does not count.
    m.stub("node", "exit 1");
    m.stub("npm", "echo 10.0.0");
    assert_eq!(m.needs(), vec!["nodejs".to_string()]);
}

#[test]
fn python_without_venv_gets_python3_venv() {
    let mut packages = FRESH_IMAGE.to_vec();
    packages.push("libclang-dev");
    let m = FakeMachine::new(&packages);
    m.stub("node", "exit 0");
    m.stub("npm", "echo 10.0.0");
    assert_eq!(
        m.needs(),
        vec!["python3".to_string(), "python3-venv".to_string()]
    );
    // python3 present, but `import venv, ensurepip` fails (Debian's python3 without python3-venv).
    m.stub("python3", "exit 1");
    assert_eq!(m.needs(), vec!["python3-venv".to_string()]);
}
