//! Bad manifests through the real binary: each gives its specific message with the
//! file, line and key, exits with code 3, and never panics.

use std::process::Command;

use crate::support::{AppDir, nimbus_bin, text};

fn deploy_error(manifest: &str) -> String {
    let app = AppDir::new(manifest);
    deploy_error_in(&app)
}

fn deploy_error_in(app: &AppDir) -> String {
    let out = Command::new(nimbus_bin())
        .args(["deploy"])
        .arg(app.path())
        .args(["--server", "http://127.0.0.1:9", "--token", "unused"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const GOOD: &str = "[app]\nname = \"bad\"\n\n[functions.api]\nsource = \"{http}\"\ntimeout = \"1s\"\n\n[[routes]]\nmethod = \"GET\"\npath = \"/a/{id}\"\nfunction = \"api\"\n";

#[test]
fn misspelled_key_names_the_closest_valid_one() {
    let err = deploy_error(&GOOD.replace("timeout =", "timeot ="));
    assert!(err.contains("unknown key `timeot`"), "{err}");
    assert!(err.contains("did you mean `timeout`?"), "{err}");
    assert!(
        err.contains("nimbus.toml:6:1"),
        "file, line and column: {err}"
    );
}

#[test]
fn route_to_a_missing_function() {
    let err = deploy_error(&GOOD.replace("function = \"api\"", "function = \"apo\""));
    assert!(
        err.contains("route names function `apo`, which is not declared"),
        "{err}"
    );
    assert!(err.contains("did you mean `api`?"), "{err}");
}

#[test]
fn duplicate_and_conflicting_routes() {
    let dup =
        format!("{GOOD}\n[[routes]]\nmethod = \"GET\"\npath = \"/a/{{id}}\"\nfunction = \"api\"\n");
    let err = deploy_error(&dup);
    assert!(err.contains("duplicate route `GET /a/{id}`"), "{err}");
    assert!(err.contains("declared at line 8"), "{err}");
    let conflict = format!(
        "{GOOD}\n[[routes]]\nmethod = \"POST\"\npath = \"/a/{{name}}\"\nfunction = \"api\"\n"
    );
    let err = deploy_error(&conflict);
    assert!(
        err.contains("route path `/a/{name}` conflicts with `/a/{id}`"),
        "{err}"
    );
}

#[test]
fn bad_values_are_named() {
    let err = deploy_error(&GOOD.replace("\"1s\"", "\"10 parsecs\""));
    assert!(err.contains("invalid duration"), "{err}");
    let err = deploy_error(&GOOD.replace("timeout = \"1s\"", "memory_mb = 0"));
    assert!(
        err.contains("`memory_mb` = 0 is out of range (1 to 4096)"),
        "{err}"
    );
    let err = deploy_error(&GOOD.replace("name = \"bad\"", "name = \"Bad App\""));
    assert!(err.contains("invalid app name `Bad App`"), "{err}");
    let err = deploy_error("[app]\nname = \"x\"\n[functions.f]\nbuild = \"true\"\n");
    assert!(err.contains("missing required key `source`"), "{err}");
    let err = deploy_error("this is not toml");
    assert!(err.contains("nimbus.toml"), "{err}");
}

#[test]
fn a_source_that_is_not_a_component() {
    let app = AppDir::new(&GOOD.replace("{http}", "module.wasm"));
    // A core module: the right magic, the wrong layer.
    std::fs::write(app.path().join("module.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let err = deploy_error_in(&app);
    assert!(
        err.contains("`module.wasm` is not a WebAssembly component"),
        "{err}"
    );
    assert!(err.contains("core WebAssembly module"), "{err}");
    std::fs::write(app.path().join("module.wasm"), b"hello").unwrap();
    let err = deploy_error_in(&app);
    assert!(err.contains("no `\\0asm` header"), "{err}");
    std::fs::remove_file(app.path().join("module.wasm")).unwrap();
    let err = deploy_error_in(&app);
    assert!(err.contains("cannot read component"), "{err}");
}
