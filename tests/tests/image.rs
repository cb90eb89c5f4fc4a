//! The daemonless image build (`scripts/image.sh`, crane built from its Go module)
//! against a real registry (CNCF Distribution on loopback): the image is pushed with
//! the configuration the Dockerfile gives (user, entrypoint, command, ports, platform),
//! holds a static host that runs the module it carries from the exported filesystem,
//! and the same inputs give the same digest.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail, ensure};
use e2e::build::build_command;
use e2e::cluster::repo_root;
use e2e::registry::TestRegistry;
use serde_json::Value;

/// Runs `program args`; fails with its output unless it succeeds; returns stdout.
fn run(program: &Path, args: &[&str]) -> Result<String> {
    let output = build_command(program)
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !output.status.success() {
        bail!(
            "{} {args:?} failed ({}):\n{}{}",
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

#[tokio::test]
async fn the_image_is_built_without_an_engine_pushed_and_runs_its_module() -> Result<()> {
    let registry = TestRegistry::start("image").await?;
    let reference = format!("{}/ops/wasm-operator:test", registry.host());
    let script = repo_root().join("scripts/image.sh");
    let digest = run(&script, &["--insecure", &reference])?.trim().to_owned();
    ensure!(digest.starts_with("sha256:"), "the script printed {digest:?}, not a digest");

    let crane_script = repo_root().join("tests/crane/build.sh");
    let crane = std::path::PathBuf::from(run(&crane_script, &["--print-path"])?.trim());
    let manifest: Value = serde_json::from_str(&run(&crane, &["manifest", "--insecure", &reference])?)?;
    ensure!(manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json", "{manifest}");
    ensure!(manifest["layers"].as_array().map(Vec::len) == Some(1), "one layer: {manifest}");
    let config: Value = serde_json::from_str(&run(&crane, &["config", "--insecure", &reference])?)?;
    ensure!(config["os"] == "linux" && config["architecture"] == "amd64", "platform: {config}");
    let image = &config["config"];
    ensure!(image["User"] == "65532:65532", "user: {image}");
    ensure!(image["Entrypoint"] == serde_json::json!(["/usr/local/bin/wasm-operator"]), "{image}");
    let command: Vec<&str> =
        image["Cmd"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    ensure!(
        command
            == ["run", "--module=/usr/local/share/wasm-operator/dittofs-reconciler.wasm", "--leader-elect"],
        "cmd: {command:?}"
    );
    for port in ["8080/tcp", "8081/tcp"] {
        ensure!(image["ExposedPorts"].get(port).is_some(), "{port} not exposed: {image}");
    }

    // The filesystem, as a container would see it.
    let dir = e2e::operator::artifact_dir("image")?.join("rootfs");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let rootfs = dir.join("rootfs.tar");
    run(&crane, &["export", "--insecure", &reference, rootfs.to_str().context("path")?])?;
    let status =
        Command::new("tar").args(["-xf", rootfs.to_str().context("path")?, "-C"]).arg(&dir).status()?;
    ensure!(status.success(), "cannot extract the image's filesystem");
    let host = dir.join("usr/local/bin/wasm-operator");
    // Static: no program interpreter, so an empty base runs it.
    let headers = run(Path::new("readelf"), &["-l", host.to_str().context("path")?])?;
    ensure!(!headers.contains("INTERP"), "the host is dynamically linked:\n{headers}");
    let module = dir.join("usr/local/share/wasm-operator/dittofs-reconciler.wasm");
    let printed = run(&host, &["manifest", "--module", module.to_str().context("path")?])?;
    let manifest: Value = serde_json::from_str(&printed)?;
    ensure!(manifest["name"] == "dittofs-reconciler", "the image's module: {manifest}");
    ensure!(dir.join("etc/ssl/certs/ca-certificates.crt").is_file(), "no CA roots");

    // Fixed owners and times: the same binaries give the same image.
    let again = run(&script, &["--insecure", &format!("{}/ops/wasm-operator:again", registry.host())])?;
    ensure!(again.trim() == digest, "rebuilt from the same inputs: {} != {digest}", again.trim());
    Ok(())
}
