//! Deploys: plans, no-op redeploys, atomic swaps under load, and persistence
//! across restarts and `kill -9`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{AppDir, TestNode, http, http_app, text};

#[tokio::test(flavor = "multi_thread")]
async fn redeploy_prints_the_plan_and_swaps_without_failed_requests() {
    let node = TestNode::serve();
    let app = AppDir::new(&http_app("swap", "env = { VERSION = \"1\" }"));
    let first = node.deploy(app.path());
    assert!(first.contains("+ function api"), "{first}");
    assert!(first.contains("+ route * /{*path} (-> api)"), "{first}");

    let again = node.deploy(app.path());
    assert!(again.contains("no changes"), "{again}");

    // Load while the app changes underneath.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), node.url("/v"));
        workers.push(tokio::spawn(async move {
            let client = http();
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let body = r.text().await.unwrap_or_default();
                        if body == "ok 1" || body == "ok 2" {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.rewrite(&format!(
        "{}\n[[routes]]\nmethod = \"GET\"\npath = \"/extra\"\nfunction = \"api\"\n",
        http_app("swap", "env = { VERSION = \"2\" }\ntimeout = \"5s\"")
    ));
    let second = node.deploy(app.path());
    assert!(second.contains("~ function api (timeout, env)"), "{second}");
    assert!(second.contains("+ route GET /extra (-> api)"), "{second}");
    assert!(
        second.contains("deployed app `swap` (deployment 2)"),
        "{second}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during the swap"
    );
    assert!(ok.load(Ordering::Relaxed) > 10);
    let r = http().get(node.url("/v")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ok 2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_apps_and_compiled_code() {
    let mut node = TestNode::serve();
    let app = AppDir::new(&http_app("keep", "env = { VERSION = \"kept\" }"));
    node.deploy(app.path());
    // kill -9: the acknowledged deploy must survive.
    node.restart(&["serve"]);
    let r = http().get(node.url("/x")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ok kept");
    let listing = node.cli(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    assert_eq!(status["apps"][0]["deployment"], 1);
    // The compiled artifact was cached on disk, keyed by the component's digest.
    let cached = std::fs::read_dir(node.data_dir.join("cache/compiled"))
        .unwrap()
        .count();
    assert_eq!(cached, 1);
    // Redeploying identical bytes changes nothing.
    assert!(node.deploy(app.path()).contains("no changes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn first_request_after_restart_is_fast_enough_to_measure() {
    // Not a timing assertion: checks that a restarted node answers at once, with
    // the time recorded for the benchmark notes.
    let mut node = TestNode::serve();
    let app = AppDir::new(&http_app("quick", ""));
    node.deploy(app.path());
    node.restart(&["serve"]);
    let started = Instant::now();
    let r = http().get(node.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    eprintln!("first 200 after restart: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_removes_the_app() {
    let node = TestNode::serve();
    let app = AppDir::new(&http_app("gone", ""));
    node.deploy(app.path());
    let out = node.cli(&["delete", "gone"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("- function api"));
    let r = http().get(node.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let out = node.cli(&["delete", "gone"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("app `gone` is not deployed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn client_verbs_explain_an_unreachable_node() {
    let node = TestNode::serve();
    let out = std::process::Command::new(crate::support::nimbus_bin())
        .args(["status", "--server", "http://127.0.0.1:9", "--data-dir"])
        .arg(&node.data_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the Nimbus node"));
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_that_are_not_components_are_refused_and_not_kept() {
    use sha2::{Digest, Sha256};
    let node = TestNode::serve();
    let token = std::fs::read_to_string(node.data_dir.join("admin-token")).unwrap();
    let put = |bytes: Vec<u8>, digest: String| {
        http()
            .put(format!("{}/v1/components/{digest}", node.admin))
            .bearer_auth(token.trim())
            .body(bytes)
            .send()
    };
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let digest = hex::encode(Sha256::digest(&core_module));
    let r = put(core_module, digest.clone()).await.unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("core WebAssembly module"),
        "{body}"
    );
    assert!(
        !node
            .data_dir
            .join(format!("components/{digest}.wasm"))
            .exists()
    );

    let r = put(b"abc".to_vec(), "0".repeat(64)).await.unwrap();
    assert_eq!(r.status(), 400, "digest mismatch");
}
