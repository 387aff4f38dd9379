//! `nimbus up examples/shop`: the data-layer example, through its routes and the CLI.

use serde_json::{Value, json};

use crate::support::{TestNode, http, repo_root, text};

#[tokio::test(flavor = "multi_thread")]
async fn nimbus_up_serves_the_shop_example() {
    let tmp = tempfile::tempdir().unwrap();
    let example = repo_root().join("examples/shop");
    let node = TestNode::start_in(tmp.path(), &["up", example.to_str().unwrap()]);
    let client = http();

    // Carts: a key-value store.
    let r = client
        .put(node.url("/carts/c1"))
        .body(r#"{"items":["mug"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client.get(node.url("/carts/c1")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), r#"{"items":["mug"]}"#);
    let r = client
        .put(node.url("/carts/c2"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Orders: a document store with queries.
    for (customer, total) in [("ada", 30), ("bob", 120), ("ada", 75)] {
        let r = client
            .post(node.url("/orders"))
            .json(&json!({"customer": customer, "total": total}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = client
        .patch(node.url("/orders/o000002"))
        .json(&json!({"status": "paid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = client
        .get(node.url("/orders?customer=ada"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["o000003", "o000001"]);
    let body: Value = client
        .get(node.url("/orders?status=paid"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["orders"][0]["order"]["customer"], "bob");
    let out = node.cli(&[
        "docs",
        "query",
        "shop/orders",
        "--filter",
        r#"{"customer":"ada"}"#,
        "--explain",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("indexes used: customer"),
        "{}",
        text(&out)
    );

    // Images: a bucket behind the function.
    let r = client
        .put(node.url("/images/mug.png"))
        .header("content-type", "image/png")
        .body(vec![0x89, b'P', b'N', b'G'])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(node.url("/images/mug.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.bytes().await.unwrap().as_ref(), [0x89, b'P', b'N', b'G']);

    // The front page: a public bucket at `/`, uploaded with the CLI.
    let page = tmp.path().join("index.html");
    std::fs::write(&page, "<h1>Shop</h1>").unwrap();
    let out = node.cli(&[
        "blob",
        "put",
        "shop/site",
        "index.html",
        page.to_str().unwrap(),
        "--content-type",
        "text/html",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let r = client.get(node.url("/")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "<h1>Shop</h1>");

    let table = String::from_utf8_lossy(&node.cli(&["status"]).stdout).into_owned();
    assert!(table.contains("shop/orders  docs     3"), "{table}");

    // The app drawn: every function, store and route, with the right kinds.
    let out = node.cli(&["diagram", "--format", "mermaid"]);
    assert!(out.status.success(), "{}", text(&out));
    let mermaid = String::from_utf8(out.stdout).unwrap();
    for label in [
        "\"api\"",
        "\"kv carts\"",
        "\"docs orders\"",
        "\"bucket images\"",
        "\"bucket site\"",
        "\"* /carts/{id}\"",
        "\"* /orders\"",
        "\"* /orders/{id}\"",
        "\"* /images/{name}\"",
        "\"GET / (public)\"",
        "subgraph edge",
        "subgraph compute",
        "subgraph data",
    ] {
        assert!(mermaid.contains(label), "no {label} in\n{mermaid}");
    }
    // Four routes and the public bucket from clients, four routes to `api`, the
    // bucket's files: sync request-response; three stores the function uses.
    assert_eq!(
        mermaid.matches("|\"sync request-response\"|").count(),
        10,
        "{mermaid}"
    );
    assert_eq!(mermaid.matches("-.->|\"uses\"|").count(), 3, "{mermaid}");
}
