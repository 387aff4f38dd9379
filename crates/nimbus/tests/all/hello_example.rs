//! `nimbus up examples/hello`: builds the example, deploys it, serves every route.

use crate::support::{TestNode, http, repo_root};

#[tokio::test(flavor = "multi_thread")]
async fn nimbus_up_serves_the_hello_example() {
    let tmp = tempfile::tempdir().unwrap();
    let example = repo_root().join("examples/hello");
    let node = TestNode::start_in(tmp.path(), &["up", example.to_str().unwrap()]);
    let client = http();
    let r = client.get(node.url("/hello")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "Hello, world!\n");
    let r = client.get(node.url("/hello/Ada")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "Hello, Ada!\n");
    let r = client
        .post(node.url("/echo"))
        .body("echo me")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "echo me");

    let out = node.cli(&["invoke", "hello/greeter", "--data", "{\"name\":\"Grace\"}"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"greeting\":\"Hello, Grace!\"}"
    );

    let out = node.cli(&["status"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("hello/hello"), "{table}");
    assert!(table.contains("GET /hello/{name}"), "{table}");
    let status = node.function_status("hello", "hello").await;
    assert_eq!(status["invocations"], 3);
    assert_eq!(status["cold_starts"], 1);
    assert!(node.log().contains("app `hello` is up"));
}
