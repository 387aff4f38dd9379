//! `nimbus diagram`: an app of 20 functions drawn as SVG (rendered to PNG by
//! `rsvg-convert`, the size a person reads without zooming), Mermaid and DOT,
//! each naming every function, resource and trigger kind.

use std::fmt::Write as _;
use std::process::Command;

use crate::support::{AppDir, TestNode, text};

/// 8 HTTP functions behind routes, 12 event functions fed by queues, a topic,
/// bus rules, a schedule and store changes.
fn twenty_functions() -> String {
    let mut m = String::from("[app]\nname = \"big\"\n\n");
    for i in 1..=8 {
        let _ = write!(
            m,
            "[functions.web{i}]\nsource = \"{{http}}\"\nuses = [\"kv:sessions\", \"queue:jobs{i}\", \"bus:big\"]\n\n\
             [[routes]]\nmethod = \"POST\"\npath = \"/api/v1/resource{i}/{{id}}\"\nfunction = \"web{i}\"\n\n"
        );
    }
    for i in 1..=12 {
        let _ = write!(m, "[functions.worker{i}]\nsource = \"{{event}}\"\n");
        if i == 1 {
            m.push_str("on_failure = { queue = \"failed\" }\n");
        }
        m.push('\n');
    }
    for i in 1..=8 {
        let _ = write!(
            m,
            "[queues.jobs{i}]\n\n[[triggers]]\nqueue = \"jobs{i}\"\nfunction = \"worker{i}\"\n\n"
        );
    }
    m.push_str(
        "[queues.failed]\n\n[kv.sessions]\n\n[docs.orders]\n\n\
         [[triggers]]\ndocs = \"orders\"\nfunction = \"worker9\"\n\n\
         [topics.news]\nsubscriptions = [{ function = \"worker10\" }, { queue = \"failed\" }]\n\n\
         [bus.rules.placed]\npattern = { type = [\"order.placed\"] }\ntargets = [{ function = \"worker11\" }, { topic = \"news\" }]\n\n\
         [schedules.nightly]\ncron = \"0 3 * * *\"\ntarget = { function = \"worker12\" }\n",
    );
    m
}

#[tokio::test]
async fn diagram_draws_every_function_resource_and_trigger() {
    let node = TestNode::serve();
    let app = AppDir::new(&twenty_functions());
    node.deploy(app.path());

    let svg_path = app.path().join("big.svg");
    let out = node.cli(&["diagram", "big", "-o", svg_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    for i in 1..=8 {
        assert!(svg.contains(&format!(">web{i}<")), "web{i}");
        assert!(svg.contains(&format!(">POST /api/v1/resource{i}/{{id}}<")));
        assert!(svg.contains(&format!(">queue jobs{i}<")));
    }
    for i in 1..=12 {
        assert!(svg.contains(&format!(">worker{i}<")), "worker{i}");
    }
    for label in [
        ">kv sessions<",
        ">docs orders<",
        ">topic news<",
        ">event bus<",
        ">schedule nightly<",
        ">queue failed<",
    ] {
        assert!(svg.contains(label), "{label}");
    }
    let arrows = |kind: &str| svg.matches(&format!("<title>{kind}:")).count();
    assert_eq!(arrows("sync request-response"), 16); // clients → 8 routes → 8 functions
    assert_eq!(arrows("polling queue"), 8);
    assert_eq!(arrows("polling stream"), 1);
    assert_eq!(arrows("async messaging"), 5); // 2 subscriptions, 2 rule targets, 1 schedule
    assert_eq!(arrows("async request-response"), 1); // worker1's on_failure
    assert_eq!(arrows("uses"), 24);

    // Rendered, it is a picture a screen shows whole at 13 px text.
    let png = app.path().join("big.png");
    let status = Command::new("rsvg-convert")
        .args(["-o", png.to_str().unwrap(), svg_path.to_str().unwrap()])
        .status()
        .expect("rsvg-convert (librsvg2-bin) renders the SVG");
    assert!(status.success());
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert!((1000..=1600).contains(&width), "{width}x{height}");
    assert!((600..=2000).contains(&height), "{width}x{height}");

    for (format, needle) in [("mermaid", "flowchart LR"), ("dot", "digraph")] {
        let out = node.cli(&["diagram", "big", "--format", format]);
        assert!(out.status.success(), "{}", text(&out));
        let body = String::from_utf8(out.stdout).unwrap();
        assert!(body.contains(needle));
        for i in 1..=12 {
            assert!(
                body.contains(&format!("\"worker{i}\"")),
                "{format}: worker{i}"
            );
        }
        assert_eq!(body.matches("polling queue").count(), 8, "{format}");
    }

    let out = node.cli(&["diagram", "nope"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("nope"), "{}", text(&out));
}
