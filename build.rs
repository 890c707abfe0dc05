//! Build script: embeds the git revision in `medialink --version`, and rebuilds when
//! a migration is added (`sqlx::migrate!` embeds them at compile time).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=MEDIALINK_GIT_REVISION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    // A container build has no .git: it passes the revision in.
    let rev = std::env::var("MEDIALINK_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        });
    println!(
        "cargo:rustc-env=MEDIALINK_REVISION={}",
        rev.unwrap_or_else(|| "unknown".into())
    );
}
