//! Golden-file tests of manifest diagnostics: each `ui/*.toml` beside the `.err`
//! it must produce. `NIMBUS_BLESS=1 cargo test -p nimbus-core --test ui` rewrites
//! the `.err` files after an intended change.

use std::path::Path;

use nimbus_core::manifest::Manifest;

#[test]
fn manifest_diagnostics_match_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let bless = std::env::var_os("NIMBUS_BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "golden cases missing");
    let mut failures = Vec::new();
    for case in cases {
        let text = std::fs::read_to_string(&case).unwrap();
        let name = case.file_name().unwrap().to_str().unwrap();
        let actual = match Manifest::parse(name, &text) {
            Ok(_) => "ok\n".to_string(),
            Err(errors) => format!("{}\n", errors.to_plain()),
        };
        let golden = case.with_extension("err");
        if bless {
            std::fs::write(&golden, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{name}:\n--- expected\n{expected}--- actual\n{actual}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
