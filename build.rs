//! Puts the git revision Herald is built from into `HERALD_GIT_REVISION`, for `herald --version`
//! and the `herald_info` metric: the short commit hash, with `-dirty` when tracked files differ
//! from it, or `unknown` when the source is not a git checkout (a crate tarball, `cargo install`
//! from crates.io) or git is not installed.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The revision, if the manifest's directory is the top of a git work tree: a Herald source
/// tree copied inside some other repository must not report that repository's commit.
fn revision() -> Option<String> {
    let top = git(&["rev-parse", "--show-toplevel"])?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(&top), Path::new(env!("CARGO_MANIFEST_DIR"))) {
        return None;
    }
    let hash = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|changes| !changes.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}

fn main() {
    let revision = revision();
    println!(
        "cargo:rustc-env=HERALD_GIT_REVISION={}",
        revision.as_deref().unwrap_or("unknown")
    );
    // Run again when the commit or the sources change (for the -dirty mark).
    for path in ["src", "Cargo.toml", "Cargo.lock", "config", "build.rs"] {
        println!("cargo:rerun-if-changed={path}");
    }
    if revision.is_some() {
        for name in ["HEAD", "index", "packed-refs"] {
            if let Some(path) = git(&["rev-parse", "--git-path", name]) {
                println!("cargo:rerun-if-changed={path}");
            }
        }
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
            && let Some(path) = git(&["rev-parse", "--git-path", &branch])
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
