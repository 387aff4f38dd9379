//! The data verbs: `nimbus kv`, `nimbus docs`, `nimbus blob` and `nimbus changes`,
//! over the data API. Each write prints only after the node answered, which it
//! does once the write is durable.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

use crate::cli_error::CliError;
use crate::client::Client;
use crate::commands::{read_data, table_text};

type CliResult = Result<(), CliError>;

/// Transfers at least this large show a progress bar (on a terminal).
const PROGRESS_BYTES: u64 = 8 << 20;

#[derive(Subcommand, Debug)]
pub enum KvCommand {
    /// Set KEY to VALUE (`@FILE` reads a file, `@-` standard input).
    Set {
        store: String,
        key: String,
        value: String,
        /// Expire the key after this long, e.g. `30s`, `1h`.
        #[arg(long)]
        ttl: Option<String>,
        /// Write only if the key is at this version (0: only if absent).
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Print the value of KEY.
    Get {
        store: String,
        key: String,
        /// Write the value to FILE instead of standard output.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Delete KEY.
    Del { store: String, key: String },
    /// List keys, in byte order.
    Ls {
        store: String,
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many keys (default: all).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Add BY (default 1) to the integer at KEY and print the result.
    Incr {
        store: String,
        key: String,
        #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
        by: i64,
    },
}

#[derive(Subcommand, Debug)]
pub enum DocsCommand {
    /// Create or replace document ID with JSON (`@FILE`, `@-`).
    Put {
        collection: String,
        id: String,
        #[arg(value_name = "JSON")]
        document: String,
        /// Write only if the document is at this revision (0: only if absent).
        #[arg(long)]
        if_rev: Option<u64>,
    },
    /// Print document ID.
    Get { collection: String, id: String },
    /// Apply a JSON merge patch to document ID.
    Patch {
        collection: String,
        id: String,
        #[arg(value_name = "JSON")]
        patch: String,
        #[arg(long)]
        if_rev: Option<u64>,
    },
    /// Delete document ID.
    Del {
        collection: String,
        id: String,
        #[arg(long)]
        if_rev: Option<u64>,
    },
    /// Query documents, e.g. `--filter '{"status": "paid", "total": {"gt": 100}}'`.
    Query {
        collection: String,
        #[arg(long)]
        filter: Option<String>,
        /// Sort by a field path; `-path` for descending (repeatable).
        #[arg(long = "order-by", allow_hyphen_values = true)]
        order_by: Vec<String>,
        #[arg(long)]
        limit: Option<usize>,
        /// Continue after a previous page.
        #[arg(long)]
        cursor: Option<String>,
        /// Show how the query runs (which indexes it uses) instead of its results.
        #[arg(long)]
        explain: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum BlobCommand {
    /// Upload FILE (`-` for standard input) as object KEY.
    Put {
        bucket: String,
        key: String,
        file: PathBuf,
        #[arg(long)]
        content_type: Option<String>,
        /// User metadata `NAME=VALUE` (repeatable).
        #[arg(long = "meta")]
        metadata: Vec<String>,
    },
    /// Download object KEY to FILE, or standard output.
    Get {
        bucket: String,
        key: String,
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// List objects; with `--delimiter /`, folders roll up.
    Ls {
        bucket: String,
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long)]
        delimiter: Option<String>,
    },
    /// Delete object KEY.
    Rm { bucket: String, key: String },
    /// Print a time-limited URL that lets anyone GET (or PUT) object KEY.
    Url {
        bucket: String,
        key: String,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long, default_value = "1h")]
        expires: String,
    },
}

pub(crate) fn split_store(target: &str) -> anyhow::Result<(&str, &str)> {
    match target.split_once('/') {
        Some((app, store)) if !app.is_empty() && !store.is_empty() && !store.contains('/') => {
            Ok((app, store))
        }
        _ => bail!("expected APP/STORE, got `{target}`"),
    }
}

/// Escapes a key or id for one path segment, or a key spread over segments.
fn escape(text: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(text, SET).to_string()
}

fn escape_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub(crate) fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializable")
    );
}

pub async fn kv(client: &Client, command: KvCommand, json_out: bool) -> CliResult {
    match command {
        KvCommand::Set {
            store,
            key,
            value,
            ttl,
            if_version,
        } => {
            let (app, store) = split_store(&store)?;
            let mut query: Vec<(&str, String)> = Vec::new();
            if let Some(ttl) = ttl {
                query.push(("ttl", ttl));
            }
            if let Some(v) = if_version {
                query.push(("if_version", v.to_string()));
            }
            let req = client
                .request(
                    Method::PUT,
                    &format!("/v1/apps/{app}/kv/{store}/keys/{}", escape(&key)),
                )
                .query(&query)
                .body(read_data(Some(value))?);
            let written: Value = client.send_json(req).await?;
            if json_out {
                print_json(&written);
            } else {
                println!("set `{key}` (version {})", written["version"]);
            }
        }
        KvCommand::Get { store, key, output } => {
            let (app, store) = split_store(&store)?;
            let req = client.request(
                Method::GET,
                &format!("/v1/apps/{app}/kv/{store}/keys/{}", escape(&key)),
            );
            let response = client.send(req).await?;
            let version = response
                .headers()
                .get("x-nimbus-version")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let bytes = response.bytes().await.context("reading the value")?;
            if json_out {
                print_json(&json!({
                    "key": key,
                    "version": version.parse::<u64>().ok(),
                    "value": String::from_utf8_lossy(&bytes),
                }));
            } else if let Some(path) = output {
                std::fs::write(&path, &bytes)
                    .with_context(|| format!("cannot write `{}`", path.display()))?;
            } else {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                out.write_all(&bytes).context("writing to stdout")?;
                if std::io::IsTerminal::is_terminal(&std::io::stdout()) && !bytes.ends_with(b"\n") {
                    writeln!(out).ok();
                }
            }
        }
        KvCommand::Del { store, key } => {
            let (app, store) = split_store(&store)?;
            let req = client.request(
                Method::DELETE,
                &format!("/v1/apps/{app}/kv/{store}/keys/{}", escape(&key)),
            );
            let result: Value = client.send_json(req).await?;
            print_deleted(&result, &key, json_out);
        }
        KvCommand::Ls {
            store,
            prefix,
            limit,
        } => {
            let (app, store) = split_store(&store)?;
            let mut keys: Vec<String> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let want = limit.map_or(1000, |l| (l - keys.len()).min(1000));
                let mut query = vec![("prefix", prefix.clone()), ("limit", want.to_string())];
                if let Some(c) = &cursor {
                    query.push(("cursor", c.clone()));
                }
                let req = client
                    .request(Method::GET, &format!("/v1/apps/{app}/kv/{store}/keys"))
                    .query(&query);
                let page: nimbus_core::data::KeyPage = client.send_json(req).await?;
                keys.extend(page.keys);
                cursor = page.cursor;
                if cursor.is_none() || limit.is_some_and(|l| keys.len() >= l) {
                    break;
                }
            }
            if json_out {
                print_json(&json!({ "keys": keys, "cursor": cursor }));
            } else {
                for key in keys {
                    println!("{key}");
                }
            }
        }
        KvCommand::Incr { store, key, by } => {
            let (app, store) = split_store(&store)?;
            let req = client
                .request(
                    Method::POST,
                    &format!("/v1/apps/{app}/kv/{store}/increment"),
                )
                .json(&json!({"key": key, "delta": by}));
            let result: Value = client.send_json(req).await?;
            if json_out {
                print_json(&result);
            } else {
                println!("{}", result["value"]);
            }
        }
    }
    Ok(())
}

/// Prints a `{"deleted": bool}` answer about `item`.
fn print_deleted(result: &Value, item: &str, json_out: bool) {
    if json_out {
        print_json(result);
    } else if result["deleted"] == true {
        println!("deleted `{item}`");
    } else {
        println!("`{item}` did not exist");
    }
}

fn read_json_arg(text: String) -> anyhow::Result<Value> {
    let bytes = read_data(Some(text))?;
    serde_json::from_slice(&bytes).context("the document is not valid JSON")
}

fn print_doc(doc: &Value, json_out: bool) {
    if json_out {
        print_json(doc);
    } else {
        println!(
            "{} (rev {})\n{}",
            doc["id"].as_str().unwrap_or_default(),
            doc["rev"],
            serde_json::to_string_pretty(&doc["body"]).unwrap_or_default()
        );
    }
}

pub async fn docs(client: &Client, command: DocsCommand, json_out: bool) -> CliResult {
    let rev_query = |rev: Option<u64>| -> Vec<(&'static str, String)> {
        rev.map(|r| vec![("if_rev", r.to_string())])
            .unwrap_or_default()
    };
    match command {
        DocsCommand::Put {
            collection,
            id,
            document,
            if_rev,
        } => {
            let (app, store) = split_store(&collection)?;
            let body = read_json_arg(document)?;
            let req = client
                .request(
                    Method::PUT,
                    &format!(
                        "/v1/apps/{app}/docs/{store}/documents/{}",
                        escape_segment(&id)
                    ),
                )
                .query(&rev_query(if_rev))
                .json(&body);
            let doc: Value = client.send_json(req).await?;
            if json_out {
                print_json(&doc);
            } else {
                println!("put `{id}` (rev {})", doc["rev"]);
            }
        }
        DocsCommand::Get { collection, id } => {
            let (app, store) = split_store(&collection)?;
            let req = client.request(
                Method::GET,
                &format!(
                    "/v1/apps/{app}/docs/{store}/documents/{}",
                    escape_segment(&id)
                ),
            );
            let doc: Value = client.send_json(req).await?;
            print_doc(&doc, json_out);
        }
        DocsCommand::Patch {
            collection,
            id,
            patch,
            if_rev,
        } => {
            let (app, store) = split_store(&collection)?;
            let body = read_json_arg(patch)?;
            let req = client
                .request(
                    Method::PATCH,
                    &format!(
                        "/v1/apps/{app}/docs/{store}/documents/{}",
                        escape_segment(&id)
                    ),
                )
                .query(&rev_query(if_rev))
                .json(&body);
            let doc: Value = client.send_json(req).await?;
            print_doc(&doc, json_out);
        }
        DocsCommand::Del {
            collection,
            id,
            if_rev,
        } => {
            let (app, store) = split_store(&collection)?;
            let req = client
                .request(
                    Method::DELETE,
                    &format!(
                        "/v1/apps/{app}/docs/{store}/documents/{}",
                        escape_segment(&id)
                    ),
                )
                .query(&rev_query(if_rev));
            let result: Value = client.send_json(req).await?;
            print_deleted(&result, &id, json_out);
        }
        DocsCommand::Query {
            collection,
            filter,
            order_by,
            limit,
            cursor,
            explain,
        } => {
            let (app, store) = split_store(&collection)?;
            let filter: Option<Value> = match filter {
                Some(text) => Some(
                    serde_json::from_str(&text)
                        .with_context(|| format!("--filter is not valid JSON: {text}"))?,
                ),
                None => None,
            };
            let body = json!({
                "filter": filter,
                "order_by": order_by,
                "limit": limit,
                "cursor": cursor,
            });
            let endpoint = if explain { "explain" } else { "query" };
            let req = client
                .request(
                    Method::POST,
                    &format!("/v1/apps/{app}/docs/{store}/{endpoint}"),
                )
                .json(&body);
            let result: Value = client.send_json(req).await?;
            if json_out {
                print_json(&result);
            } else if explain {
                let used: Vec<&str> = result["indexes_used"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str())
                    .collect();
                if used.is_empty() {
                    println!("indexes used: none (scans the collection)");
                } else {
                    println!("indexes used: {}", used.join(", "));
                }
                for step in result["steps"].as_array().into_iter().flatten() {
                    println!("  {}", step.as_str().unwrap_or_default());
                }
            } else {
                for doc in result["documents"].as_array().into_iter().flatten() {
                    println!("{}", serde_json::to_string(doc).unwrap_or_default());
                }
                if let Some(c) = result["cursor"].as_str() {
                    eprintln!("more: --cursor {c}");
                }
            }
        }
    }
    Ok(())
}

fn progress(len: u64, verb: &str) -> Option<ProgressBar> {
    if len < PROGRESS_BYTES || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(verb.to_string());
    Some(bar)
}

pub async fn blob(client: &Client, command: BlobCommand, json_out: bool) -> CliResult {
    match command {
        BlobCommand::Put {
            bucket,
            key,
            file,
            content_type,
            metadata,
        } => {
            let (app, store) = split_store(&bucket)?;
            let mut req = client.request(
                Method::PUT,
                &format!("/v1/apps/{app}/buckets/{store}/objects/{}", escape(&key)),
            );
            if let Some(t) = content_type {
                req = req.header("content-type", t);
            }
            for m in &metadata {
                let (name, value) = m
                    .split_once('=')
                    .with_context(|| format!("invalid --meta `{m}`: expected NAME=VALUE"))?;
                req = req.header(format!("x-nimbus-meta-{}", name.trim()), value.trim());
            }
            let body = if file.as_os_str() == "-" {
                reqwest::Body::from(read_data(Some("@-".into()))?)
            } else {
                let f = tokio::fs::File::open(&file)
                    .await
                    .with_context(|| format!("cannot open `{}`", file.display()))?;
                let len = f.metadata().await.context("reading the file's size")?.len();
                let bar = progress(len, "uploading");
                let stream = tokio_util::io::ReaderStream::with_capacity(f, 256 << 10);
                let tracked = stream.inspect(move |chunk| {
                    if let (Some(bar), Ok(chunk)) = (&bar, chunk) {
                        bar.inc(chunk.len() as u64);
                        if bar.position() >= bar.length().unwrap_or(0) {
                            bar.finish_and_clear();
                        }
                    }
                });
                req = req.header("content-length", len);
                reqwest::Body::wrap_stream(tracked)
            };
            let meta: Value = client.send_json(req.body(body)).await?;
            if json_out {
                print_json(&meta);
            } else {
                println!(
                    "put `{key}` ({} bytes, etag {})",
                    meta["size"],
                    meta["etag"].as_str().unwrap_or_default()
                );
            }
        }
        BlobCommand::Get {
            bucket,
            key,
            output,
        } => {
            let (app, store) = split_store(&bucket)?;
            let req = client.request(
                Method::GET,
                &format!("/v1/apps/{app}/buckets/{store}/objects/{}", escape(&key)),
            );
            let response = client.send(req).await?;
            let len = response.content_length().unwrap_or(0);
            let mut stream = response.bytes_stream();
            match output {
                Some(path) => {
                    // Write beside the target and rename: an interrupted download
                    // never leaves a partial file under the requested name.
                    let tmp = path.with_extension("nimbus-partial");
                    let mut f = tokio::fs::File::create(&tmp)
                        .await
                        .with_context(|| format!("cannot create `{}`", tmp.display()))?;
                    let bar = progress(len, "downloading");
                    while let Some(chunk) = stream.next().await {
                        let chunk = chunk.context("reading the object")?;
                        f.write_all(&chunk).await.context("writing the file")?;
                        if let Some(bar) = &bar {
                            bar.inc(chunk.len() as u64);
                        }
                    }
                    f.sync_all().await.context("writing the file")?;
                    drop(f);
                    std::fs::rename(&tmp, &path)
                        .with_context(|| format!("cannot write `{}`", path.display()))?;
                    if let Some(bar) = bar {
                        bar.finish_and_clear();
                    }
                    if json_out {
                        print_json(&json!({"key": key, "size": len, "file": path}));
                    }
                }
                None => {
                    let mut out = tokio::io::stdout();
                    while let Some(chunk) = stream.next().await {
                        out.write_all(&chunk.context("reading the object")?)
                            .await
                            .context("writing to stdout")?;
                    }
                    out.flush().await.context("writing to stdout")?;
                }
            }
        }
        BlobCommand::Ls {
            bucket,
            prefix,
            delimiter,
        } => {
            let (app, store) = split_store(&bucket)?;
            let mut objects: Vec<Value> = Vec::new();
            let mut prefixes: Vec<Value> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut query = vec![("prefix", prefix.clone())];
                if let Some(d) = &delimiter {
                    query.push(("delimiter", d.clone()));
                }
                if let Some(c) = &cursor {
                    query.push(("cursor", c.clone()));
                }
                let req = client
                    .request(
                        Method::GET,
                        &format!("/v1/apps/{app}/buckets/{store}/objects"),
                    )
                    .query(&query);
                let page: Value = client.send_json(req).await?;
                objects.extend(page["objects"].as_array().cloned().unwrap_or_default());
                prefixes.extend(
                    page["common_prefixes"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                );
                cursor = page["cursor"].as_str().map(str::to_string);
                if cursor.is_none() {
                    break;
                }
            }
            if json_out {
                print_json(&json!({"objects": objects, "common_prefixes": prefixes}));
            } else {
                let mut rows = vec![
                    ["KEY", "SIZE", "ETAG", "CONTENT TYPE"]
                        .map(String::from)
                        .to_vec(),
                ];
                for p in &prefixes {
                    rows.push(vec![
                        p.as_str().unwrap_or_default().to_string(),
                        "-".into(),
                        String::new(),
                        String::new(),
                    ]);
                }
                for o in &objects {
                    rows.push(vec![
                        o["key"].as_str().unwrap_or_default().to_string(),
                        o["size"].to_string(),
                        o["etag"].as_str().unwrap_or_default().to_string(),
                        o["content_type"].as_str().unwrap_or_default().to_string(),
                    ]);
                }
                print!("{}", table_text(&rows));
            }
        }
        BlobCommand::Rm { bucket, key } => {
            let (app, store) = split_store(&bucket)?;
            let req = client.request(
                Method::DELETE,
                &format!("/v1/apps/{app}/buckets/{store}/objects/{}", escape(&key)),
            );
            let result: Value = client.send_json(req).await?;
            print_deleted(&result, &key, json_out);
        }
        BlobCommand::Url {
            bucket,
            key,
            method,
            expires,
        } => {
            let (app, store) = split_store(&bucket)?;
            let req = client
                .request(
                    Method::POST,
                    &format!("/v1/apps/{app}/buckets/{store}/sign"),
                )
                .json(&json!({"key": key, "method": method, "expires_in": expires}));
            let result: Value = client.send_json(req).await?;
            if json_out {
                print_json(&result);
            } else {
                println!("{}", result["url"].as_str().unwrap_or_default());
            }
        }
    }
    Ok(())
}

/// `nimbus changes APP/KIND/NAME`: a store's change feed.
pub async fn changes(
    client: &Client,
    target: &str,
    after: u64,
    limit: usize,
    json_out: bool,
) -> CliResult {
    let parts: Vec<&str> = target.split('/').collect();
    let [app, kind, name] = parts[..] else {
        return Err(anyhow::anyhow!(
            "expected APP/KIND/NAME (KIND: kv, docs or buckets), got `{target}`"
        )
        .into());
    };
    if !["kv", "docs", "buckets"].contains(&kind) {
        return Err(anyhow::anyhow!("unknown store kind `{kind}`: use kv, docs or buckets").into());
    }
    let req = client
        .request(
            Method::GET,
            &format!("/v1/apps/{app}/{kind}/{name}/changes"),
        )
        .query(&[("after", after.to_string()), ("limit", limit.to_string())]);
    let result: Value = client.send_json(req).await?;
    if json_out {
        print_json(&result);
        return Ok(());
    }
    let mut rows = vec![
        ["SEQ", "TIME", "TYPE", "SUBJECT"]
            .map(String::from)
            .to_vec(),
    ];
    for change in result["changes"].as_array().into_iter().flatten() {
        let event = &change["event"];
        rows.push(vec![
            change["seq"].to_string(),
            event["time"].as_str().unwrap_or_default().to_string(),
            event["type"].as_str().unwrap_or_default().to_string(),
            event["subject"].as_str().unwrap_or_default().to_string(),
        ]);
    }
    print!("{}", table_text(&rows));
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Send BODY (`@FILE`, `@-`); prints the message id once it is durable.
    Send {
        queue: String,
        body: String,
        /// Delay before the message becomes visible, e.g. `30s`.
        #[arg(long)]
        delay: Option<String>,
        /// FIFO queues: the message group.
        #[arg(long)]
        group: Option<String>,
        /// FIFO queues: the deduplication id.
        #[arg(long)]
        dedup_id: Option<String>,
        /// Attribute `NAME=VALUE` (repeatable).
        #[arg(long = "attr")]
        attributes: Vec<String>,
    },
    /// Receive messages (they stay in the queue, invisible, unless --delete).
    Recv {
        queue: String,
        /// At most this many (1 to 10).
        #[arg(long, default_value_t = 1)]
        max: usize,
        /// Wait up to this many seconds for a first message (long polling, at most 20).
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// Visibility timeout of these deliveries, e.g. `5m`.
        #[arg(long)]
        visibility: Option<String>,
        /// Delete each message after printing it.
        #[arg(long)]
        delete: bool,
    },
    /// Delete a received message by its receipt.
    Del { queue: String, receipt: String },
    /// Delete every message of the queue.
    Purge { queue: String },
    /// Depth, in-flight count and age of the oldest message.
    Stats { queue: String },
    /// Move every message of a dead-letter queue back to its source queue.
    Redrive { queue: String },
}

pub async fn queue(client: &Client, command: QueueCommand, json_out: bool) -> CliResult {
    match command {
        QueueCommand::Send {
            queue,
            body,
            delay,
            group,
            dedup_id,
            attributes,
        } => {
            let (app, queue) = split_store(&queue)?;
            let mut query: Vec<(&str, String)> = Vec::new();
            if let Some(d) = delay {
                query.push(("delay", d));
            }
            if let Some(g) = group {
                query.push(("group_id", g));
            }
            if let Some(d) = dedup_id {
                query.push(("dedup_id", d));
            }
            let mut req = client
                .request(
                    Method::POST,
                    &format!("/v1/apps/{app}/queues/{queue}/messages"),
                )
                .query(&query)
                .body(read_data(Some(body))?);
            for a in &attributes {
                let (name, value) = a
                    .split_once('=')
                    .with_context(|| format!("invalid --attr `{a}`: expected NAME=VALUE"))?;
                req = req.header(format!("x-nimbus-attr-{}", name.trim()), value.trim());
            }
            let sent: Value = client.send_json(req).await?;
            if json_out {
                print_json(&sent);
            } else if sent["deduplicated"] == true {
                println!(
                    "{} (duplicate: not enqueued again)",
                    sent["message_id"].as_str().unwrap_or_default()
                );
            } else {
                println!("{}", sent["message_id"].as_str().unwrap_or_default());
            }
        }
        QueueCommand::Recv {
            queue,
            max,
            wait,
            visibility,
            delete,
        } => {
            let (app, queue) = split_store(&queue)?;
            let mut query = vec![("max", max.to_string()), ("wait", format!("{wait}s"))];
            if let Some(v) = visibility {
                query.push(("visibility", v));
            }
            let req = client
                .request(
                    Method::GET,
                    &format!("/v1/apps/{app}/queues/{queue}/messages"),
                )
                .query(&query);
            let result: Value = client.send_json(req).await?;
            let messages = result["messages"].as_array().cloned().unwrap_or_default();
            if json_out {
                print_json(&result);
            } else {
                for m in &messages {
                    println!(
                        "{}  receives={}  receipt={}\n{}",
                        m["message_id"].as_str().unwrap_or_default(),
                        m["receive_count"],
                        m["receipt"].as_str().unwrap_or_default(),
                        m["body"].as_str().unwrap_or_default()
                    );
                }
            }
            if delete {
                for m in &messages {
                    let receipt = m["receipt"].as_str().unwrap_or_default();
                    let req = client.request(
                        Method::DELETE,
                        &format!(
                            "/v1/apps/{app}/queues/{queue}/messages/{}",
                            escape_segment(receipt)
                        ),
                    );
                    client.send(req).await?;
                }
            }
        }
        QueueCommand::Del { queue, receipt } => {
            let (app, queue) = split_store(&queue)?;
            let req = client.request(
                Method::DELETE,
                &format!(
                    "/v1/apps/{app}/queues/{queue}/messages/{}",
                    escape_segment(&receipt)
                ),
            );
            let result: Value = client.send_json(req).await?;
            if json_out {
                print_json(&result);
            } else if result["deleted"] == true {
                println!("deleted");
            } else {
                println!(
                    "not deleted: the receipt is not current (the message was received again or is gone)"
                );
            }
        }
        QueueCommand::Purge { queue } => {
            let (app, queue) = split_store(&queue)?;
            let req = client.request(
                Method::POST,
                &format!("/v1/apps/{app}/queues/{queue}/purge"),
            );
            let result: Value = client.send_json(req).await?;
            if json_out {
                print_json(&result);
            } else {
                println!("purged {} message(s)", result["purged"]);
            }
        }
        QueueCommand::Stats { queue } => {
            let (app, queue) = split_store(&queue)?;
            let req = client.request(Method::GET, &format!("/v1/apps/{app}/queues/{queue}"));
            let stats: Value = client.send_json(req).await?;
            if json_out {
                print_json(&stats);
            } else {
                let rows = vec![
                    ["VISIBLE", "IN FLIGHT", "DELAYED", "OLDEST"]
                        .map(String::from)
                        .to_vec(),
                    vec![
                        stats["visible"].to_string(),
                        stats["in_flight"].to_string(),
                        stats["delayed"].to_string(),
                        format_age(stats["oldest_age_ms"].as_u64().unwrap_or(0)),
                    ],
                ];
                print!("{}", table_text(&rows));
            }
        }
        QueueCommand::Redrive { queue } => {
            let (app, queue) = split_store(&queue)?;
            let req = client.request(
                Method::POST,
                &format!("/v1/apps/{app}/queues/{queue}/redrive"),
            );
            let result: Value = client.send_json(req).await?;
            if json_out {
                print_json(&result);
            } else {
                println!("moved {} message(s) back", result["moved"]);
            }
        }
    }
    Ok(())
}

/// `0s`, `12s`, `3m`, `2h`.
pub fn format_age(ms: u64) -> String {
    match ms / 1000 {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

#[derive(Subcommand, Debug)]
pub enum TriggerCommand {
    /// The app's queue triggers: state, pollers, batches delivered, failures.
    Ls { app: String },
    /// Turn a trigger on (APP/TRIGGER); remembered across restarts.
    Enable { trigger: String },
    /// Turn a trigger off (APP/TRIGGER): its messages wait in the queue.
    Disable { trigger: String },
}

pub async fn trigger(client: &Client, command: TriggerCommand, json_out: bool) -> CliResult {
    let (target, action) = match command {
        TriggerCommand::Ls { app } => {
            let req = client.request(Method::GET, &format!("/v1/apps/{app}/triggers"));
            let triggers: Value = client.send_json(req).await?;
            if json_out {
                print_json(&triggers);
                return Ok(());
            }
            let mut rows = vec![
                [
                    "TRIGGER", "SOURCE", "FUNCTION", "ENABLED", "POLLERS", "BATCHES", "MESSAGES",
                    "FAILED",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for t in triggers.as_array().into_iter().flatten() {
                rows.push(
                    [
                        "name", "source", "function", "enabled", "pollers", "batches", "messages",
                        "failed",
                    ]
                    .iter()
                    .map(|k| match &t[*k] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect(),
                );
            }
            print!("{}", table_text(&rows));
            return Ok(());
        }
        TriggerCommand::Enable { trigger } => (trigger, "enable"),
        TriggerCommand::Disable { trigger } => (trigger, "disable"),
    };
    let (app, name) = split_store(&target)?;
    let req = client.request(
        Method::POST,
        &format!("/v1/apps/{app}/triggers/{name}/{action}"),
    );
    let result: Value = client.send_json(req).await?;
    if json_out {
        print_json(&result);
    } else {
        println!("trigger `{name}` {action}d");
    }
    Ok(())
}
