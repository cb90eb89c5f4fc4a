//! The offline tools as a user runs them: `wasm-operator reconcile` and
//! `wasm-operator manifest`, their output, exit status and one-line errors.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    /// Assembles a fixture of `tests/fixtures/` to a `.wasm` file.
    fn fixture(&self, name: &str) -> PathBuf {
        let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/fixtures/{name}.wat"));
        self.wasm(name, &std::fs::read_to_string(source).unwrap())
    }

    fn wasm(&self, name: &str, wat: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.wasm"));
        std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
        path
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn snapshot(&self) -> PathBuf {
        self.file("snapshot.json", SNAPSHOT)
    }
}

const SNAPSHOT: &str = r#"{"abi":1,"now":"2026-11-26T12:00:00Z","object":{"apiVersion":"dittofs.dittofs.com/v1alpha1","kind":"DittoServer","metadata":{"name":"hostile","namespace":"default","uid":"6f1c8e0e-7d1b-4c55-9b8a-0d8f2a1f9c11"}}}"#;

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasm-operator"))
        .args(args)
        .arg("--no-module-cache")
        .env_remove("RUST_LOG")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn reconcile(module: &Path, snapshot: &Path, extra: &[&str]) -> Output {
    let mut args =
        vec!["reconcile", "--module", module.to_str().unwrap(), "--snapshot", snapshot.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args, None)
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The one line of stderr, checked to be exactly one.
fn error_line(output: &Output) -> String {
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr is not one line: {stderr:?}");
    assert!(lines[0].starts_with("error: "), "{stderr:?}");
    lines[0].to_owned()
}

#[test]
fn reconcile_prints_the_outcome_and_exits_0() {
    let work = Workdir::new();
    let output = reconcile(&work.fixture("minimal"), &work.snapshot(), &[]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(stdout(&output), "{\"actions\":[],\"requeueAfterSeconds\":60}\n");
    assert!(output.stderr.is_empty(), "{output:?}");
}

#[test]
fn reconcile_reads_the_snapshot_from_stdin() {
    let work = Workdir::new();
    let module = work.fixture("minimal");
    let output = run(&["reconcile", "--module", module.to_str().unwrap(), "--snapshot", "-"], Some(SNAPSHOT));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(stdout(&output), "{\"actions\":[],\"requeueAfterSeconds\":60}\n");
}

#[test]
fn an_error_outcome_is_a_valid_outcome() {
    let work = Workdir::new();
    let wat = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/minimal.wat"),
    )
    .unwrap()
    .replace(
        r#"{\"actions\":[],\"requeueAfterSeconds\":60}"#,
        r#"{\"error\":{\"message\":\"spec.storage is missing\",\"retryable\":false}}"#,
    );
    let output = reconcile(&work.wasm("error-outcome", &wat), &work.snapshot(), &[]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(stdout(&output).starts_with(r#"{"error":{"message":"spec.storage is missing""#), "{output:?}");
}

#[test]
fn a_failing_module_exits_1_with_one_line() {
    let work = Workdir::new();
    let cases = [
        ("endless-loop", "error: module exceeded its 50 ms deadline in reconcile"),
        ("memory-bomb", "error: module exceeded its memory limit of 64 MiB in reconcile"),
        ("bad-pointer", "error: module returned a buffer outside its memory from reconcile: ptr 0xffffff00"),
        ("garbage-output", "error: module output from reconcile is not JSON"),
        ("not-an-outcome", "error: module output is not a valid outcome: unknown variant `deleteEverything`"),
    ];
    for (name, expected) in cases {
        let output = reconcile(&work.fixture(name), &work.snapshot(), &["--deadline-ms", "50"]);
        assert_eq!(output.status.code(), Some(1), "{name}: {output:?}");
        assert!(output.stdout.is_empty(), "{name}: {output:?}");
        let line = error_line(&output);
        assert!(line.starts_with(expected), "{name}: {line}");
    }
}

#[test]
fn a_rejected_module_exits_1_with_one_line() {
    let work = Workdir::new();
    let cases = [
        (
            "with-import",
            "error: module rejected: module has imports, but abi v1 modules import nothing: env::log",
        ),
        ("wrong-abi", "error: module rejected: module implements abi 2"),
        (
            "trap-in-smoke",
            "error: module rejected: module failed its smoke reconcile: module trapped in reconcile",
        ),
        (
            "invalid-manifest",
            "error: module rejected: module manifest is invalid: manifest field `related[0].plural` is empty",
        ),
    ];
    for (name, expected) in cases {
        let module = work.fixture(name);
        for output in [
            reconcile(&module, &work.snapshot(), &[]),
            run(&["manifest", "--module", module.to_str().unwrap()], None),
        ] {
            assert_eq!(output.status.code(), Some(1), "{name}: {output:?}");
            let line = error_line(&output);
            assert!(line.starts_with(expected), "{name}: {line}");
        }
    }
}

#[test]
fn unreadable_input_exits_2() {
    let work = Workdir::new();
    let module = work.fixture("minimal");
    let missing = work.dir.path().join("missing.wasm");
    let not_json = work.file("bad.json", "{not json");
    let wrong_shape = work.file("shape.json", r#"{"abi":1,"now":"x"}"#);
    let cases = [
        (reconcile(&missing, &work.snapshot(), &[]), "error: cannot read module"),
        (reconcile(&module, &work.dir.path().join("none.json"), &[]), "error: cannot read snapshot"),
        (reconcile(&module, &not_json, &[]), "error: snapshot is not valid JSON"),
        (
            reconcile(&module, &wrong_shape, &[]),
            "error: snapshot does not match abi 1: missing field `object`",
        ),
        (reconcile(&module, &work.snapshot(), &["--memory-limit-mib", "0"]), "error: memory limit of 0 MiB"),
    ];
    for (output, expected) in cases {
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        let line = error_line(&output);
        assert!(line.starts_with(expected), "{line}");
    }
}

#[test]
fn manifest_prints_the_manifest_as_pretty_json() {
    let work = Workdir::new();
    let module = work.fixture("minimal");
    let output = run(&["manifest", "--module", module.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = stdout(&output);
    assert!(text.starts_with("{\n  \"abi\": 1,\n  \"name\": \"minimal\""), "{text}");
    let manifest: reconcile_sdk::Manifest = serde_json::from_str(&text).unwrap();
    assert_eq!(manifest.primary.plural, "dittoservers");
}
