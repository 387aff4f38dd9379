//! The data layer end to end: key-value, document and object stores through a
//! real guest (the data fixture, over the SDK), the admin API and the CLI;
//! grants, limits, change feeds, store lifecycle, public buckets, signed URLs,
//! and `kill -9` in the middle of a stream of writes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{AppDir, TestNode, http, text};

const APP: &str = r#"
[app]
name = "shop"

[functions.api]
source = "{data}"
uses = ["kv:carts", "docs:orders", "bucket:images", "bucket:site"]

[functions.other]
source = "{data}"
uses = ["kv:sessions"]

[[routes]]
path = "/{*path}"
function = "api"

[[routes]]
path = "/other/{*path}"
function = "other"

[kv.carts]
[kv.sessions]

[docs.orders]
indexes = ["status", "customer.id"]

[buckets.images]

[buckets.site]
public = true
mount = "/site"
"#;

fn deployed() -> (TestNode, AppDir) {
    let node = TestNode::serve();
    let app = AppDir::new(APP);
    node.deploy(app.path());
    (node, app)
}

async fn call(
    node: &TestNode,
    method: Method,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, String) {
    let r = http()
        .request(method, node.url(path))
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn get(node: &TestNode, path: &str) -> (u16, String) {
    call(node, Method::GET, path, "").await
}

async fn post(node: &TestNode, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    call(node, Method::POST, path, body).await
}

fn cli_ok(node: &TestNode, args: &[&str]) -> String {
    let out = node.cli(args);
    assert!(out.status.success(), "{args:?}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A store's whole change feed, read page by page with the cursor.
async fn changes(node: &TestNode, kind: &str, store: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let path = format!("/v1/apps/shop/{kind}/{store}/changes?limit=500&after={after}");
        let r = node.api(Method::GET, &path).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let page = body["changes"].as_array().unwrap().clone();
        if page.is_empty() {
            return all;
        }
        after = body["cursor"].as_u64().unwrap();
        all.extend(page);
    }
}

/// Every key of a store, read page by page.
async fn all_keys(node: &TestNode, store: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/apps/shop/kv/{store}/keys?limit=500");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: Value = node
            .api(Method::GET, &path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        keys.extend(
            page["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_string()),
        );
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return keys,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_through_a_guest_the_api_and_the_cli() {
    let (node, _app) = deployed();

    assert_eq!(
        post(&node, "/kv/set?store=carts&key=c1", "two items").await,
        (200, "ok".into())
    );
    assert_eq!(
        get(&node, "/kv/get?store=carts&key=c1").await,
        (200, "two items".into())
    );
    assert_eq!(get(&node, "/kv/exists?store=carts&key=c1").await.1, "true");
    assert_eq!(get(&node, "/kv/exists?store=carts&key=zz").await.1, "false");
    // The CLI sees the guest's write, and the guest the CLI's.
    assert_eq!(
        cli_ok(&node, &["kv", "get", "shop/carts", "c1"]),
        "two items"
    );
    cli_ok(&node, &["kv", "set", "shop/carts", "c2", "from cli"]);
    assert_eq!(get(&node, "/kv/get?store=carts&key=c2").await.1, "from cli");

    // Versions and compare-and-swap.
    assert_eq!(
        get(&node, "/kv/entry?store=carts&key=c1").await.1,
        "version=1 expires=false value=two items"
    );
    assert_eq!(
        post(&node, "/kv/set?store=carts&key=c1&if_version=1", "three")
            .await
            .1,
        "version=2"
    );
    let (status, body) = post(&node, "/kv/set?store=carts&key=c1&if_version=1", "stale").await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("version 2"), "{body}");
    assert_eq!(
        post(&node, "/kv/set?store=carts&key=new&if_version=0", "x")
            .await
            .1,
        "version=1"
    );
    assert_eq!(
        post(&node, "/kv/set?store=carts&key=new&if_version=0", "y")
            .await
            .0,
        409
    );
    let out = node.cli(&["kv", "set", "shop/carts", "c1", "v", "--if-version", "7"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is at version 2, not 7"),
        "{}",
        text(&out)
    );

    // Atomic increments, positive and negative.
    assert_eq!(
        post(&node, "/kv/incr?store=carts&key=n&by=5", "").await.1,
        "5"
    );
    assert_eq!(
        post(&node, "/kv/incr?store=carts&key=n&by=-7", "").await.1,
        "-2"
    );
    assert_eq!(
        cli_ok(&node, &["kv", "incr", "shop/carts", "n", "--by", "3"]).trim(),
        "1"
    );
    assert_eq!(post(&node, "/kv/incr?store=carts&key=c1", "").await.0, 400);
    assert_eq!(
        post(&node, "/kv/wasi-incr?store=carts&key=n&by=2", "")
            .await
            .1,
        "3"
    );

    // Batches, prefix listing with cursors (guest and CLI).
    let lines: String = (0..25).map(|i| format!("user:{i:02}=u{i}\n")).collect();
    assert_eq!(
        post(&node, "/kv/batch?store=carts", lines).await.1,
        "found=25"
    );
    let all = get(&node, "/kv/list?store=carts&prefix=user:").await.1;
    assert_eq!(all.lines().count(), 25);
    let page = get(&node, "/kv/page?store=carts&prefix=user:&limit=10")
        .await
        .1;
    assert!(page.starts_with("user:00,user:01"), "{page}");
    assert!(page.ends_with("cursor=user:09"), "{page}");
    let next = get(
        &node,
        "/kv/page?store=carts&prefix=user:&limit=10&cursor=user:09",
    )
    .await
    .1;
    assert!(next.starts_with("user:10,"), "{next}");
    let listed = cli_ok(&node, &["kv", "ls", "shop/carts", "--prefix", "user:"]);
    assert_eq!(listed.lines().count(), 25);
    assert_eq!(
        post(&node, "/kv/batch-del?store=carts", "user:00\nuser:01")
            .await
            .1,
        "ok"
    );
    assert_eq!(
        get(&node, "/kv/list?store=carts&prefix=user:")
            .await
            .1
            .lines()
            .count(),
        23
    );
    cli_ok(&node, &["kv", "del", "shop/carts", "c2"]);
    assert_eq!(get(&node, "/kv/get?store=carts&key=c2").await.0, 404);

    // TTL: gone once it passes, through every reader.
    assert_eq!(
        post(&node, "/kv/set?store=carts&key=t&ttl_ms=300", "soon gone")
            .await
            .1,
        "version=1"
    );
    assert_eq!(
        get(&node, "/kv/entry?store=carts&key=t").await.1,
        "version=1 expires=true value=soon gone"
    );
    cli_ok(
        &node,
        &["kv", "set", "shop/carts", "t2", "x", "--ttl", "1s"],
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(get(&node, "/kv/get?store=carts&key=t").await.0, 404);
    assert!(
        !node
            .cli(&["kv", "get", "shop/carts", "t2"])
            .status
            .success()
    );
    // The sweeper deleted them, with an event each.
    let feed = changes(&node, "kv", "carts").await;
    assert!(
        feed.iter()
            .any(|c| c["event"]["type"] == "nimbus.kv.expired" && c["event"]["subject"] == "t")
    );

    // Grants: `other` may use `sessions` only; `api` may not use `sessions`.
    assert_eq!(
        post(&node, "/other/kv/set?store=sessions&key=s", "x")
            .await
            .1,
        "ok"
    );
    let (status, body) = post(&node, "/kv/set?store=sessions&key=s", "x").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not granted"), "{body}");
    let (status, body) = get(&node, "/other/kv/get?store=carts&key=c1").await;
    assert_eq!(status, 403, "{body}");
    node.wait_log("key-value store `sessions` is not granted to function `api`");
    // ...and nothing else happened.
    assert_eq!(cli_ok(&node, &["kv", "get", "shop/sessions", "s"]), "x");
    assert_eq!(changes(&node, "kv", "sessions").await.len(), 1);

    // Limits and bad keys, from the guest and over the API.
    let (status, body) = get(&node, "/kv/set?store=carts&key=a%00b").await;
    assert_eq!(status, 400, "{body}");
    let long = "k".repeat(1025);
    assert_eq!(
        get(&node, &format!("/kv/set?store=carts&key={long}"))
            .await
            .0,
        400
    );
    let big = vec![b'x'; (4 << 20) + 1];
    let r = node
        .api(Method::PUT, "/v1/apps/shop/kv/carts/keys/big")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = node
        .api(Method::GET, "/v1/apps/shop/kv/nope/keys/x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "no_such_store");
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_queries_indexes_and_revisions() {
    let (node, _app) = deployed();
    for (id, status, total, customer) in [
        ("o1", "paid", 120, 7),
        ("o2", "new", 20, 7),
        ("o3", "paid", 300, 8),
        ("o4", "shipped", 80, 9),
        ("o5", "paid", 50, 9),
    ] {
        let doc =
            json!({"status": status, "total": total, "customer": {"id": customer}, "tags": ["a"]});
        assert_eq!(
            post(
                &node,
                &format!("/docs/put?coll=orders&id={id}"),
                doc.to_string()
            )
            .await,
            (200, "rev=1".into())
        );
    }
    let q = |spec: Value| spec.to_string();
    let (status, body) = post(
        &node,
        "/docs/query?coll=orders",
        q(json!({"filter": {"status": "paid"}, "order_by": ["-total"]})),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "o3,o1,o5\ncursor="));
    let body = post(
        &node,
        "/docs/query?coll=orders",
        q(json!({"filter": {"customer.id": {"in": [7, 9]}, "total": {"ge": 50}}})),
    )
    .await
    .1;
    assert_eq!(body, "o1,o4,o5\ncursor=");
    let body = post(
        &node,
        "/docs/query?coll=orders",
        q(json!({"filter": {"$or": [{"status": {"prefix": "sh"}}, {"total": {"lt": 30}}]}})),
    )
    .await
    .1;
    assert_eq!(body, "o2,o4\ncursor=");
    let body = post(
        &node,
        "/docs/query?coll=orders",
        q(json!({"filter": {"status": {"ne": "paid"}, "missing": {"exists": false}}})),
    )
    .await
    .1;
    assert_eq!(body, "o2,o4\ncursor=");
    // Pagination visits every document once.
    let first = post(
        &node,
        "/docs/query?coll=orders",
        q(json!({"order_by": ["total"], "limit": 2})),
    )
    .await
    .1;
    let (ids, cursor) = first.split_once("\ncursor=").unwrap();
    assert_eq!(ids, "o2,o5");
    let second = post(
        &node,
        "/docs/query?coll=orders",
        q(json!({"order_by": ["total"], "limit": 10, "cursor": cursor})),
    )
    .await
    .1;
    assert_eq!(second, "o4,o1,o3\ncursor=");
    let (status, body) = post(
        &node,
        "/docs/query?coll=orders",
        q(json!({"filter": {"total": {"near": 3}}})),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // Explain proves the declared index is used, and that an undeclared field scans.
    let plan = cli_ok(
        &node,
        &[
            "docs",
            "query",
            "shop/orders",
            "--filter",
            r#"{"status":"paid"}"#,
            "--explain",
        ],
    );
    assert!(plan.starts_with("indexes used: status"), "{plan}");
    let plan = cli_ok(
        &node,
        &[
            "docs",
            "query",
            "shop/orders",
            "--filter",
            r#"{"customer.id":7}"#,
            "--explain",
            "--json",
        ],
    );
    let plan: Value = serde_json::from_str(&plan).unwrap();
    assert_eq!(plan["indexes_used"], json!(["customer.id"]));
    let plan = cli_ok(
        &node,
        &[
            "docs",
            "query",
            "shop/orders",
            "--filter",
            r#"{"total":{"gt":1}}"#,
            "--explain",
        ],
    );
    assert!(plan.starts_with("indexes used: none"), "{plan}");
    let out = cli_ok(
        &node,
        &[
            "docs",
            "query",
            "shop/orders",
            "--filter",
            r#"{"status":"paid"}"#,
            "--order-by=-total",
            "--limit",
            "1",
        ],
    );
    assert!(out.starts_with(r#"{"body":{"customer":{"id":8}"#), "{out}");

    // Revisions: optimistic concurrency, merge patch, delete.
    assert_eq!(
        post(
            &node,
            "/docs/put?coll=orders&id=o1&if_rev=1",
            r#"{"status":"refunded","total":120}"#
        )
        .await
        .1,
        "rev=2"
    );
    let (status, body) = post(&node, "/docs/put?coll=orders&id=o1&if_rev=1", "{}").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        post(
            &node,
            "/docs/patch?coll=orders&id=o1",
            r#"{"total":null,"note":"x"}"#
        )
        .await
        .1,
        "rev=3"
    );
    let doc: Value =
        serde_json::from_str(&get(&node, "/docs/get?coll=orders&id=o1").await.1).unwrap();
    assert_eq!(doc["body"], json!({"status": "refunded", "note": "x"}));
    assert_eq!(doc["rev"], 3);
    assert_eq!(
        post(&node, "/docs/put?coll=orders&id=o1", "[1,2]").await.0,
        400
    );
    // The CLI: put, get, delete.
    cli_ok(
        &node,
        &["docs", "put", "shop/orders", "o9", r#"{"status":"new"}"#],
    );
    let got = cli_ok(&node, &["docs", "get", "shop/orders", "o9", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&got).unwrap()["body"]["status"],
        "new"
    );
    assert_eq!(
        post(&node, "/docs/del?coll=orders&id=o9", "").await.1,
        "true"
    );
    assert_eq!(get(&node, "/docs/get?coll=orders&id=o9").await.0, 404);
    let out = cli_ok(&node, &["docs", "del", "shop/orders", "o9"]);
    assert!(out.contains("did not exist"), "{out}");

    // Change events: created, updated, deleted, in order, with the document.
    let feed = changes(&node, "docs", "orders").await;
    let types: Vec<&str> = feed
        .iter()
        .map(|c| c["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(types[..5], ["nimbus.docs.created"; 5]);
    assert_eq!(
        types[5..],
        [
            "nimbus.docs.updated",
            "nimbus.docs.updated",
            "nimbus.docs.created",
            "nimbus.docs.deleted"
        ]
    );
    assert_eq!(feed[0]["event"]["source"], "nimbus/shop/docs/orders");
    assert_eq!(feed[0]["event"]["subject"], "o1");
    assert_eq!(feed[0]["event"]["data"]["document"]["total"], 120);
}

fn md5_b64(bytes: &[u8]) -> String {
    use md5::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(bytes))
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_stream_range_multipart_and_check_digests() {
    let (node, app) = deployed();
    // A 3 MiB object over the API, streamed in chunks.
    let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let r = node
        .api(
            Method::PUT,
            "/v1/apps/shop/buckets/images/objects/big/data.bin",
        )
        .header("content-type", "application/x-test")
        .header("content-md5", md5_b64(&data))
        .header("x-nimbus-meta-owner", "tests")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let meta: Value = r.json().await.unwrap();
    assert_eq!(meta["etag"], md5_hex(&data));
    assert_eq!(meta["size"], data.len());

    let r = node
        .api(
            Method::GET,
            "/v1/apps/shop/buckets/images/objects/big/data.bin",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-test");
    assert_eq!(r.headers()["x-nimbus-meta-owner"], "tests");
    assert_eq!(r.headers()["etag"], format!("\"{}\"", md5_hex(&data)));
    assert_eq!(r.bytes().await.unwrap(), data);
    let r = node
        .api(
            Method::GET,
            "/v1/apps/shop/buckets/images/objects/big/data.bin",
        )
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 1000-1999/{}", data.len())
    );
    assert_eq!(r.bytes().await.unwrap(), data[1000..2000]);
    let r = node
        .api(
            Method::GET,
            "/v1/apps/shop/buckets/images/objects/big/data.bin",
        )
        .header("range", format!("bytes={}-", data.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);

    // A wrong Content-MD5 stores nothing: no object, no event.
    let before = changes(&node, "buckets", "images").await.len();
    let r = node
        .api(Method::PUT, "/v1/apps/shop/buckets/images/objects/bad.bin")
        .header("content-md5", md5_b64(b"something else"))
        .body("the real bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "bad_digest");
    let r = node
        .api(Method::HEAD, "/v1/apps/shop/buckets/images/objects/bad.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(changes(&node, "buckets", "images").await.len(), before);

    // Keys that could name a path outside the bucket are refused.
    // (`/` escaped, so the HTTP client does not resolve the dots itself.)
    for key in ["..%2Fescape", "a%2F..%2F..%2Fb", "a%2F.%2Fb", "nul%00key"] {
        let r = node
            .api(
                Method::PUT,
                &format!("/v1/apps/shop/buckets/images/objects/{key}"),
            )
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{key}");
    }
    let long = "k".repeat(1025);
    assert_eq!(
        post(&node, &format!("/blobs/put?bucket=images&key={long}"), "x")
            .await
            .0,
        400
    );

    // Multipart: parts in order become one object with an S3-style ETag.
    let r = node
        .api(Method::POST, "/v1/apps/shop/buckets/images/uploads")
        .json(&json!({"key": "multi.bin", "content_type": "application/x-multi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let upload = r.json::<Value>().await.unwrap()["upload_id"]
        .as_str()
        .unwrap()
        .to_string();
    let parts = [vec![b'a'; 300_000], vec![b'b'; 1000]];
    let mut etags = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let r = node
            .api(
                Method::PUT,
                &format!(
                    "/v1/apps/shop/buckets/images/uploads/{upload}/parts/{}",
                    i + 1
                ),
            )
            .body(part.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        etags.push(
            r.json::<Value>().await.unwrap()["etag"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let r = node
        .api(Method::POST, &format!("/v1/apps/shop/buckets/images/uploads/{upload}/complete"))
        .json(&json!({"parts": [{"part_number": 1, "etag": etags[0]}, {"part_number": 2, "etag": etags[1]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let meta: Value = r.json().await.unwrap();
    assert!(meta["etag"].as_str().unwrap().ends_with("-2"), "{meta}");
    let whole = [parts[0].clone(), parts[1].clone()].concat();
    assert_eq!(
        get(&node, "/blobs/get?bucket=images&key=multi.bin")
            .await
            .1
            .as_bytes(),
        whole
    );
    // An aborted upload leaves nothing behind.
    let r = node
        .api(Method::POST, "/v1/apps/shop/buckets/images/uploads")
        .json(&json!({"key": "aborted.bin"}))
        .send()
        .await
        .unwrap();
    let upload = r.json::<Value>().await.unwrap()["upload_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = node
        .api(
            Method::DELETE,
            &format!("/v1/apps/shop/buckets/images/uploads/{upload}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = node
        .api(
            Method::POST,
            &format!("/v1/apps/shop/buckets/images/uploads/{upload}/complete"),
        )
        .json(&json!({"parts": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The guest: put, get, range, head, copy, list with a delimiter, delete.
    assert!(
        post(
            &node,
            "/blobs/put?bucket=images&key=p/1.txt&type=text/plain",
            "hello guest"
        )
        .await
        .1
        .starts_with(&format!("etag={}", md5_hex(b"hello guest")))
    );
    assert_eq!(
        get(&node, "/blobs/get?bucket=images&key=p/1.txt").await.1,
        "hello guest"
    );
    assert_eq!(
        get(
            &node,
            "/blobs/range?bucket=images&key=p/1.txt&offset=6&length=5"
        )
        .await
        .1,
        "guest"
    );
    assert_eq!(
        get(&node, "/blobs/head?bucket=images&key=p/1.txt").await.1,
        format!("size=11 etag={}", md5_hex(b"hello guest"))
    );
    assert!(
        post(
            &node,
            "/blobs/copy?bucket=images&key=p/1.txt&to_key=p/2.txt",
            ""
        )
        .await
        .1
        .starts_with("etag=")
    );
    assert_eq!(
        get(&node, "/blobs/list?bucket=images&prefix=p/").await.1,
        "p/1.txt,p/2.txt\nprefixes="
    );
    assert_eq!(
        get(&node, "/blobs/list?bucket=images&delimiter=/").await.1,
        "multi.bin\nprefixes=big/,p/"
    );
    assert_eq!(
        post(&node, "/blobs/del?bucket=images&key=p/2.txt", "")
            .await
            .1,
        "true"
    );
    let r = node
        .api(Method::GET, "/v1/apps/shop/buckets/images/objects/p/1.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-nimbus-meta-origin"], "guest");

    // The CLI: files in and out, listing, removal.
    let file = app.path().join("upload.bin");
    std::fs::write(&file, &data[..200_000]).unwrap();
    let out = cli_ok(
        &node,
        &[
            "blob",
            "put",
            "shop/images",
            "cli/file.bin",
            file.to_str().unwrap(),
            "--content-type",
            "application/x-cli",
        ],
    );
    assert!(out.contains("200000 bytes"), "{out}");
    let back = app.path().join("download.bin");
    cli_ok(
        &node,
        &[
            "blob",
            "get",
            "shop/images",
            "cli/file.bin",
            "-o",
            back.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read(&back).unwrap(), data[..200_000]);
    let listed = cli_ok(&node, &["blob", "ls", "shop/images", "--prefix", "cli/"]);
    assert!(listed.contains("cli/file.bin  200000"), "{listed}");
    cli_ok(&node, &["blob", "rm", "shop/images", "cli/file.bin"]);
    assert!(
        !node
            .cli(&["blob", "get", "shop/images", "cli/file.bin"])
            .status
            .success()
    );

    let feed = changes(&node, "buckets", "images").await;
    let created = feed
        .iter()
        .filter(|c| c["event"]["type"] == "nimbus.blob.created")
        .count();
    let deleted = feed
        .iter()
        .filter(|c| c["event"]["type"] == "nimbus.blob.deleted")
        .count();
    assert_eq!((created, deleted), (5, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn public_buckets_and_signed_urls() {
    let (node, app) = deployed();
    let index = app.path().join("index.html");
    std::fs::write(&index, "<h1>shop</h1>").unwrap();
    let path = index.to_str().unwrap();
    cli_ok(
        &node,
        &[
            "blob",
            "put",
            "shop/site",
            "index.html",
            path,
            "--content-type",
            "text/html",
        ],
    );
    cli_ok(
        &node,
        &[
            "blob",
            "put",
            "shop/site",
            "docs/index.html",
            path,
            "--content-type",
            "text/html",
        ],
    );
    cli_ok(&node, &["blob", "put", "shop/images", "secret.png", path]);

    // The public bucket is a static site under its mount, with index documents.
    let r = http().get(node.url("/site/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html");
    let etag = r.headers()["etag"].clone();
    assert_eq!(r.text().await.unwrap(), "<h1>shop</h1>");
    assert_eq!(
        http()
            .get(node.url("/site/docs/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = http()
        .get(node.url("/site/index.html"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // Read-only: a write does not reach it (the route's function answers instead).
    let r = http()
        .put(node.url("/site/index.html"))
        .body("defaced")
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 200);
    assert_eq!(
        cli_ok(&node, &["blob", "get", "shop/site", "index.html"]),
        "<h1>shop</h1>"
    );

    // A private bucket is reachable only with a signed URL.
    let url = cli_ok(
        &node,
        &[
            "blob",
            "url",
            "shop/images",
            "secret.png",
            "--expires",
            "2s",
        ],
    );
    let url = url.trim();
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert_eq!(r.text().await.unwrap(), "<h1>shop</h1>");
    // A browser's CORS preflight is answered.
    let r = http().request(Method::OPTIONS, url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-methods"],
        "GET, HEAD, PUT"
    );
    let tampered = url.replace("secret.png", "other.png");
    assert_eq!(http().get(&tampered).send().await.unwrap().status(), 403);
    assert_eq!(
        http().put(url).body("x").send().await.unwrap().status(),
        403
    );

    // A signed PUT lets a browser upload one object without credentials.
    let put_url = cli_ok(
        &node,
        &[
            "blob",
            "url",
            "shop/images",
            "upload.txt",
            "--method",
            "PUT",
        ],
    );
    let r = http()
        .put(put_url.trim())
        .header("content-type", "text/plain")
        .body("from a browser")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        cli_ok(&node, &["blob", "get", "shop/images", "upload.txt"]),
        "from a browser"
    );

    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("expired"));
}

#[tokio::test(flavor = "multi_thread")]
async fn stores_are_created_listed_and_deleted_only_when_confirmed() {
    let (node, app) = deployed();
    cli_ok(&node, &["kv", "set", "shop/sessions", "s", "x"]);
    let status = node.status().await;
    let stores = &status["apps"][0]["stores"];
    assert_eq!(stores.as_array().unwrap().len(), 5, "{status}");
    let table = cli_ok(&node, &["status"]);
    assert!(table.contains("shop/sessions  kv"), "{table}");

    // Dropping `sessions` (and the function that used it) needs --yes.
    let without = APP
        .replace("[kv.sessions]\n", "")
        .replace(
            "[functions.other]\nsource = \"{data}\"\nuses = [\"kv:sessions\"]\n",
            "",
        )
        .replace(
            "[[routes]]\npath = \"/other/{*path}\"\nfunction = \"other\"\n",
            "",
        );
    app.rewrite(&without);
    let out = node.cli(&["deploy", app.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let printed = text(&out);
    assert!(
        printed.contains("- store kv/sessions (deletes its data)"),
        "{printed}"
    );
    assert!(printed.contains("--yes"), "{printed}");
    assert_eq!(cli_ok(&node, &["kv", "get", "shop/sessions", "s"]), "x");
    // The API refuses too, without the confirmation.
    let plan = cli_ok(
        &node,
        &["deploy", app.path().to_str().unwrap(), "--dry-run"],
    );
    assert!(plan.contains("- store kv/sessions"), "{plan}");

    cli_ok(&node, &["deploy", app.path().to_str().unwrap(), "--yes"]);
    let out = node.cli(&["kv", "get", "shop/sessions", "s"]);
    assert!(text(&out).contains("does not exist"), "{}", text(&out));
    // Declared again, it starts empty.
    app.rewrite(APP);
    node.deploy(app.path());
    assert!(
        !node
            .cli(&["kv", "get", "shop/sessions", "s"])
            .status
            .success()
    );

    // Deleting the app deletes its data, only with --yes.
    assert!(!node.cli(&["delete", "shop"]).status.success());
    cli_ok(&node, &["delete", "shop", "--yes"]);
    let r = node
        .api(Method::GET, "/v1/apps/shop/kv/carts/keys")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_writes_loses_nothing_acknowledged() {
    kill_9_during_writes(&["serve"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_with_crash_durability_loses_nothing_acknowledged() {
    // Commits are not fsynced in this mode, yet a killed process loses nothing:
    // the operating system still holds every write.
    kill_9_during_writes(&["serve", "--durability", "crash"]).await;
}

async fn kill_9_during_writes(args: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = TestNode::start_in(tmp.path(), args);
    let app = AppDir::new(APP);
    node.deploy(app.path());
    let stop = Arc::new(AtomicBool::new(false));
    let acked_kv = Arc::new(std::sync::Mutex::new(BTreeMap::<String, String>::new()));
    let acked_objects = Arc::new(std::sync::Mutex::new(BTreeMap::<String, String>::new()));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (stop, acked_kv, acked_objects) =
            (stop.clone(), acked_kv.clone(), acked_objects.clone());
        let gateway = node.gateway.clone();
        let token = std::fs::read_to_string(node.data_dir.join("admin-token")).unwrap();
        let admin = node.admin.clone();
        workers.push(tokio::spawn(async move {
            let client = http();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("w{w}-{i}");
                let value = format!("value {w} {i}");
                // Guest writes (host calls) and API object puts, interleaved.
                let r = client
                    .post(format!("{gateway}/kv/set?store=carts&key={key}"))
                    .body(value.clone())
                    .send()
                    .await;
                if let Ok(r) = r
                    && r.status() == 200
                {
                    acked_kv.lock().unwrap().insert(key.clone(), value.clone());
                }
                let body = value.repeat(2000);
                let r = client
                    .put(format!("{admin}/v1/apps/shop/buckets/images/objects/{key}"))
                    .bearer_auth(token.trim())
                    .body(body.clone())
                    .send()
                    .await;
                if let Ok(r) = r
                    && r.status() == 200
                {
                    acked_objects.lock().unwrap().insert(key, body);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    node.restart(args);
    let kv = acked_kv.lock().unwrap().clone();
    let objects = acked_objects.lock().unwrap().clone();
    assert!(
        kv.len() > 10 && objects.len() > 10,
        "too few writes: {} {}",
        kv.len(),
        objects.len()
    );
    for (key, value) in &kv {
        let r = node
            .api(Method::GET, &format!("/v1/apps/shop/kv/carts/keys/{key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged key {key} lost");
        assert_eq!(&r.text().await.unwrap(), value);
    }
    for (key, body) in &objects {
        let r = node
            .api(
                Method::GET,
                &format!("/v1/apps/shop/buckets/images/objects/{key}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged object {key} lost");
        assert_eq!(&r.text().await.unwrap(), body);
    }
    // No partial object: every object present (acknowledged or not) matches its ETag.
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/apps/shop/buckets/images/objects?limit=500".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: Value = node
            .api(Method::GET, &path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        listed.extend(page["objects"].as_array().unwrap().clone());
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    for o in &listed {
        let key = o["key"].as_str().unwrap();
        let r = node
            .api(
                Method::GET,
                &format!("/v1/apps/shop/buckets/images/objects/{key}"),
            )
            .send()
            .await
            .unwrap();
        let bytes = r.bytes().await.unwrap();
        assert_eq!(
            o["etag"].as_str().unwrap(),
            md5_hex(&bytes),
            "object {key} is partial"
        );
        assert_eq!(o["size"], bytes.len());
    }
    // The feed agrees with the data: one `set` per stored key, one `created` per object.
    let feed = changes(&node, "kv", "carts").await;
    let set: std::collections::BTreeSet<String> = feed
        .iter()
        .map(|c| c["event"]["subject"].as_str().unwrap().to_string())
        .collect();
    let stored: std::collections::BTreeSet<String> =
        all_keys(&node, "carts").await.into_iter().collect();
    assert_eq!(set, stored);
    let feed = changes(&node, "buckets", "images").await;
    assert_eq!(feed.len(), listed.len());
}

/// A component built only against the upstream `wasi:keyvalue` WIT (no Nimbus
/// SDK, no Nimbus import) runs unchanged: store, atomics and batch.
#[tokio::test(flavor = "multi_thread")]
async fn a_plain_wasi_keyvalue_component_runs_unchanged() {
    let node = TestNode::serve();
    let app = AppDir::new(
        "[app]\nname = \"shop\"\n\n[functions.plain]\nsource = \"{kv-wasi}\"\nuses = [\"kv:carts\"]\n\n\
         [[routes]]\npath = \"/{*path}\"\nfunction = \"plain\"\n\n[kv.carts]\n[kv.sessions]\n",
    );
    node.deploy(app.path());

    assert_eq!(
        post(&node, "/set?store=carts&key=c1", "mug").await,
        (200, "ok".into())
    );
    assert_eq!(
        get(&node, "/get?store=carts&key=c1").await,
        (200, "mug".into())
    );
    assert_eq!(cli_ok(&node, &["kv", "get", "shop/carts", "c1"]), "mug");
    assert_eq!(get(&node, "/exists?store=carts&key=c1").await.1, "true");
    assert_eq!(get(&node, "/get?store=carts&key=nope").await.0, 404);
    assert_eq!(get(&node, "/increment?store=carts&key=n&by=5").await.1, "5");
    assert_eq!(get(&node, "/increment?store=carts&key=n&by=2").await.1, "7");
    assert_eq!(
        post(&node, "/set-many?store=carts", "a=1\nb=2\nc=3")
            .await
            .1,
        "ok"
    );
    assert_eq!(
        get(&node, "/get-many?store=carts&keys=a,zz,c").await.1,
        "a=1\n-\nc=3"
    );
    assert_eq!(
        get(&node, "/delete-many?store=carts&keys=a,b").await.1,
        "ok"
    );
    assert_eq!(get(&node, "/delete?store=carts&key=c1").await.1, "ok");
    assert_eq!(get(&node, "/exists?store=carts&key=c1").await.1, "false");
    // More keys than one page, read through the standard numeric cursor.
    // A batch holds at most 1,000 entries (the documented limit), so two.
    for part in [0..600, 600..1200] {
        let many: String = part.map(|i| format!("k{i:04}=v\n")).collect();
        assert_eq!(post(&node, "/set-many?store=carts", many).await.1, "ok");
    }
    let over: String = (0..1001).map(|i| format!("x{i}=v\n")).collect();
    let (status, body) = post(&node, "/set-many?store=carts", over).await;
    assert_eq!(status, 500);
    assert!(body.contains("at most 1000"), "{body}");
    let (status, listed) = get(&node, "/list?store=carts").await;
    assert_eq!(status, 200, "{listed}");
    let listed: Vec<&str> = listed.lines().collect();
    assert_eq!(listed.len(), 1202, "k0000..k1199, c and n");
    assert!(listed.contains(&"k1199") && listed.contains(&"c") && listed.contains(&"n"));

    // A store that is not granted is the standard `access-denied`.
    let (status, body) = get(&node, "/get?store=sessions&key=s").await;
    assert_eq!(status, 500);
    assert!(body.contains("AccessDenied"), "{body}");
    // An undeclared store is not granted either: no way to probe for names.
    let (status, body) = get(&node, "/get?store=nope&key=s").await;
    assert_eq!(status, 500);
    assert!(body.contains("AccessDenied"), "{body}");
    assert_eq!(changes(&node, "kv", "sessions").await.len(), 0);
}

/// Grants hold for documents and buckets as for key-value stores: a function
/// without `docs:orders` or `bucket:images` gets "not granted", and nothing is
/// written.
#[tokio::test(flavor = "multi_thread")]
async fn documents_and_buckets_refuse_functions_without_a_grant() {
    let node = TestNode::serve();
    let app = AppDir::new(
        "[app]\nname = \"shop\"\n\n[functions.api]\nsource = \"{data}\"\nuses = [\"kv:carts\"]\n\n\
         [[routes]]\npath = \"/{*path}\"\nfunction = \"api\"\n\n[kv.carts]\n[docs.orders]\n[buckets.images]\n",
    );
    node.deploy(app.path());
    for (path, body) in [
        ("/docs/put?coll=orders&id=o1", r#"{"total": 1}"#),
        ("/docs/get?coll=orders&id=o1", ""),
        ("/docs/query?coll=orders", "{}"),
        ("/blobs/put?bucket=images&key=a.png", "png"),
        ("/blobs/get?bucket=images&key=a.png", ""),
        ("/blobs/list?bucket=images", ""),
    ] {
        let (status, text) = post(&node, path, body).await;
        assert_eq!(status, 403, "{path}: {text}");
        assert!(text.contains("not granted"), "{path}: {text}");
    }
    node.wait_log("document store `orders` is not granted to function `api`");
    node.wait_log("bucket `images` is not granted to function `api`");
    assert!(changes(&node, "docs", "orders").await.is_empty());
    assert!(changes(&node, "buckets", "images").await.is_empty());
    let r = node
        .api(Method::GET, "/v1/apps/shop/buckets/images/objects/a.png")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
