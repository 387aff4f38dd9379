//! Event functions, invoked with `nimbus invoke`.

use crate::support::{AppDir, TestNode, text};

const EVENTS: &str = r#"
[app]
name = "ev"

[functions.handler]
source = "{event}"

[functions.api]
source = "{http}"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn invoke_calls_event_and_http_functions() {
    let node = TestNode::serve();
    let app = AppDir::new(EVENTS);
    node.deploy(app.path());

    let out = node.cli(&["invoke", "ev/handler", "--data", "{\"n\":1}"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "nimbus.invoke {\"n\":1}"
    );

    let out = node.cli(&[
        "invoke",
        "ev/handler",
        "--type",
        "order.created",
        "--data",
        "x",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "order.created x");

    let out = node.cli(&["invoke", "ev/handler", "--data", "fail"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fixture asked to fail"),
        "{}",
        text(&out)
    );

    let out = node.cli(&["invoke", "ev/handler", "--data", "trap"]);
    assert_eq!(out.status.code(), Some(1));
    // The next event gets a fresh instance and succeeds.
    let out = node.cli(&["invoke", "ev/handler", "--data", "again"]);
    assert!(out.status.success(), "{}", text(&out));

    let out = node.cli(&["invoke", "ev/api", "--path", "/env?name=NONE"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "<unset>");

    let out = node.cli(&["invoke", "ev/nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("function `ev/nope` is not deployed"));
    let out = node.cli(&["invoke", "nonsense"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected APP/FUNCTION"));
}
