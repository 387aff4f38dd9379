//! The CLI verbs.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use futures::StreamExt as _;
use nimbus_core::api::StatusReport;

use crate::cli_error::CliError;
use crate::client::{Client, api_error, check_app_function};
use crate::loader::{load_components, manifest_path, read_manifest, run_builds};
use crate::node::{Node, NodeConfig, shutdown_signal};

type CliResult = Result<(), CliError>;

pub async fn up(dir: &Path, no_build: bool, yes: bool, mut config: NodeConfig) -> CliResult {
    let path = manifest_path(dir);
    let manifest = read_manifest(&path)?;
    let app_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    if !no_build {
        let (m, d) = (&manifest, &app_dir);
        tokio::task::block_in_place(|| run_builds(m, d))?;
    }
    let loaded = load_components(manifest, &app_dir)?;
    let name = loaded.manifest.app.name.clone();
    config.default_app.get_or_insert(name.clone());
    let node = Node::start(config).await?;
    for (function, (digest, bytes)) in &loaded.components {
        node.control
            .upload(digest, bytes)
            .await
            .with_context(|| format!("function `{function}`"))?;
    }
    let deployed = node
        .control
        .deploy(&name, &loaded.deploy_request(), yes)
        .await
        .context("deploy failed")?;
    if deployed.applied {
        eprint!("{}", deployed.plan);
    }
    let base = format!("http://{}", node.gateway_addr);
    println!("app `{name}` is up (deployment {})", deployed.deployment);
    for route in &loaded.manifest.app.routes {
        println!(
            "  {:<7} {base}{}  -> {}",
            route.method.as_deref().unwrap_or("*"),
            route.path,
            route.function
        );
    }
    println!("admin API: http://{}  (Ctrl-C to stop)", node.admin_addr);
    node.run(shutdown_signal()).await?;
    Ok(())
}

pub async fn serve(config: NodeConfig) -> CliResult {
    let data_dir = config.data_dir.clone();
    let node = Node::start(config).await?;
    println!("gateway:   http://{}", node.gateway_addr);
    println!("admin API: http://{}", node.admin_addr);
    println!("data dir:  {}", data_dir.display());
    node.run(shutdown_signal()).await?;
    Ok(())
}

pub async fn deploy(
    dir: &Path,
    build: bool,
    dry_run: bool,
    yes: bool,
    connect: impl FnOnce() -> Result<Client, CliError>,
    json: bool,
) -> CliResult {
    let path = manifest_path(dir);
    let manifest = read_manifest(&path)?;
    let app_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    if build {
        run_builds(&manifest, &app_dir)?;
    }
    let loaded = load_components(manifest, &app_dir)?;
    let client = &connect()?;
    let name = loaded.manifest.app.name.clone();
    for (function, (digest, bytes)) in &loaded.components {
        if let Some(uploaded) = client
            .upload(digest, bytes.clone())
            .await
            .with_context(|| format!("uploading function `{function}`"))?
            && !json
        {
            eprintln!(
                "uploaded `{function}` ({} KiB, {} function, compiled in {} ms)",
                bytes.len() / 1024,
                uploaded.kind,
                uploaded.compile_ms
            );
        }
    }
    let request = loaded.deploy_request();
    let plan = client.plan(&name, &request).await?;
    if dry_run {
        if json {
            println!("{}", serde_json::to_string_pretty(&plan).expect("json"));
        } else {
            print!("{plan}");
        }
        return Ok(());
    }
    if plan.is_empty() {
        if json {
            println!("{}", serde_json::json!({ "plan": plan, "applied": false }));
        } else {
            print!("{plan}");
        }
        return Ok(());
    }
    if !json {
        print!("{plan}");
    }
    let deleted = plan.deleted_stores();
    if !deleted.is_empty() && !yes {
        return Err(anyhow::anyhow!(
            "this deploy deletes {} and all data in {}; nothing was changed. Run again with --yes to delete {}",
            deleted.join(", "),
            if deleted.len() == 1 { "it" } else { "them" },
            if deleted.len() == 1 { "it" } else { "them" },
        )
        .into());
    }
    let deployed = client.deploy(&name, &request, yes).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&deployed).expect("json"));
    } else if deployed.applied {
        println!("deployed app `{name}` (deployment {})", deployed.deployment);
    } else {
        println!("app `{name}`: no changes");
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct InvokeArgs {
    /// The function, as APP/FUNCTION.
    target: String,
    /// HTTP method of the request (HTTP functions).
    #[arg(long, short = 'X', default_value = "GET")]
    method: String,
    /// Path and query of the request (HTTP functions).
    #[arg(long, default_value = "/")]
    path: String,
    /// Request body or event data; `@FILE` reads a file, `@-` standard input.
    #[arg(long, short = 'd')]
    data: Option<String>,
    /// Extra request header, `NAME: VALUE` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Deliver `--data` as a CloudEvent of this type (event functions).
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Print the response status and headers before the body.
    #[arg(long, short = 'i')]
    include: bool,
    /// Invoke asynchronously (event functions): print the invocation id once the
    /// event is durably queued; `nimbus invocation ID` shows how it went.
    #[arg(long = "async")]
    async_: bool,
}

pub fn read_data(data: Option<String>) -> anyhow::Result<Vec<u8>> {
    match data.as_deref() {
        None => Ok(Vec::new()),
        Some("@-") => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
            Ok(buf)
        }
        Some(d) if d.starts_with('@') => {
            std::fs::read(&d[1..]).with_context(|| format!("cannot read `{}`", &d[1..]))
        }
        Some(d) => Ok(d.as_bytes().to_vec()),
    }
}

pub async fn invoke(client: &Client, args: InvokeArgs, json: bool) -> CliResult {
    let (app, function) = check_app_function(&args.target)?;
    let body = read_data(args.data)?;
    if args.async_ {
        let mut req = client
            .request(
                reqwest::Method::POST,
                &format!("/v1/apps/{app}/functions/{function}/invocations"),
            )
            .body(body);
        if let Some(t) = &args.event_type {
            req = req.query(&[("type", t)]);
        }
        for header in &args.headers {
            let (name, value) = header
                .split_once(':')
                .with_context(|| format!("invalid header `{header}`: expected `NAME: VALUE`"))?;
            req = req.header(name.trim(), value.trim());
        }
        let accepted: serde_json::Value = client.send_json(req).await?;
        if json {
            println!("{accepted}");
        } else {
            println!("{}", accepted["invocation_id"].as_str().unwrap_or_default());
        }
        return Ok(());
    }
    let mut query = vec![("method", args.method.clone()), ("path", args.path.clone())];
    if let Some(t) = &args.event_type {
        query.push(("type", t.clone()));
    }
    let mut req = client
        .request(
            reqwest::Method::POST,
            &format!("/v1/apps/{app}/functions/{function}/invoke"),
        )
        .query(&query)
        .body(body);
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("invalid header `{header}`: expected `NAME: VALUE`"))?;
        req = req.header(name.trim(), value.trim());
    }
    let response = req
        .send()
        .await
        .context("cannot reach the Nimbus node; is it running?")?;
    let status = response.status();
    if !status.is_success()
        && response
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/json")
        && response
            .headers()
            .get("x-nimbus-function-response")
            .is_none()
    {
        // Errors of the platform (not responses of the function) are JSON bodies.
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let err = api_error(response).await;
        return Err(anyhow::anyhow!("{err} [request {request_id}]").into());
    }
    let mut out = std::io::stdout().lock();
    if args.include {
        writeln!(out, "{:?} {}", response.version(), status).ok();
        for (name, value) in response.headers() {
            writeln!(out, "{name}: {}", value.to_str().unwrap_or("<binary>")).ok();
        }
        writeln!(out).ok();
    }
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("reading the response")?;
        out.write_all(&chunk).context("writing to stdout")?;
        out.flush().ok();
    }
    if !status.is_success() {
        return Err(anyhow::anyhow!("the function answered {status}").into());
    }
    Ok(())
}

/// `nimbus invocation ID`: an async invocation's status, attempts and result.
pub async fn invocation(client: &Client, id: &str, wait: bool, json: bool) -> CliResult {
    loop {
        let req = client.request(reqwest::Method::GET, &format!("/v1/invocations/{id}"));
        let inv: serde_json::Value = client.send_json(req).await?;
        let ended = inv["status"] == "succeeded" || inv["status"] == "failed";
        if !wait || ended {
            if json {
                println!("{}", serde_json::to_string_pretty(&inv).expect("json"));
            } else {
                println!(
                    "{} {}/{}: {} after {} attempt(s)",
                    id,
                    inv["app"].as_str().unwrap_or_default(),
                    inv["function"].as_str().unwrap_or_default(),
                    inv["status"].as_str().unwrap_or_default(),
                    inv["attempts"]
                );
                if let Some(out) = inv["output"].as_str() {
                    println!("output: {out}");
                }
                if let Some(err) = inv["error"].as_str() {
                    println!("error: {err}");
                }
            }
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub async fn status(client: &Client, json: bool) -> CliResult {
    let report = client.status().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        print!("{}", render_status(&report));
    }
    Ok(())
}

pub async fn delete(client: &Client, app: &str, yes: bool, json: bool) -> CliResult {
    let plan = client.delete(app, yes).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plan).expect("json"));
    } else {
        print!("{plan}");
        println!("deleted app `{app}`");
    }
    Ok(())
}

/// The status report as aligned tables.
pub fn render_status(report: &StatusReport) -> String {
    let mut out = format!("gateway {}\n", report.gateway);
    if report.apps.is_empty() {
        out.push_str("no apps deployed\n");
        return out;
    }
    let mut apps = vec![vec!["APP".into(), "DEPLOYMENT".into(), "HOSTS".into()]];
    let mut functions = vec![
        [
            "FUNCTION",
            "KIND",
            "LIVE",
            "BUSY",
            "INVOCATIONS",
            "ERRORS",
            "THROTTLED",
            "COLD STARTS",
            "P50 MS",
            "P99 MS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut routes = vec![vec!["ROUTE".into(), "FUNCTION".into()]];
    let mut stores = vec![
        ["STORE", "KIND", "ITEMS", "BYTES"]
            .map(String::from)
            .to_vec(),
    ];
    let mut queues = vec![
        ["QUEUE", "VISIBLE", "IN FLIGHT", "DELAYED", "OLDEST"]
            .map(String::from)
            .to_vec(),
    ];
    let mut triggers = vec![
        [
            "TRIGGER",
            "SOURCE -> FUNCTION",
            "ENABLED",
            "POLLERS",
            "MESSAGES",
            "FAILED",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for app in &report.apps {
        for t in &app.triggers {
            triggers.push(vec![
                format!("{}/{}", app.name, t.name),
                format!("{} -> {}", t.source, t.function),
                t.enabled.to_string(),
                t.pollers.to_string(),
                t.messages.to_string(),
                t.failed.to_string(),
            ]);
        }
        for q in &app.queues {
            queues.push(vec![
                format!("{}/{}", app.name, q.name),
                q.visible.to_string(),
                q.in_flight.to_string(),
                q.delayed.to_string(),
                crate::data_cli::format_age(q.oldest_age_ms),
            ]);
        }
        for st in &app.stores {
            stores.push(vec![
                format!("{}/{}", app.name, st.name),
                st.kind.to_string(),
                st.items.to_string(),
                st.bytes.to_string(),
            ]);
        }
        apps.push(vec![
            app.name.clone(),
            app.deployment.to_string(),
            app.hosts.join(", "),
        ]);
        for f in &app.functions {
            functions.push(vec![
                format!("{}/{}", app.name, f.name),
                f.kind.clone(),
                f.live_instances.to_string(),
                f.busy_instances.to_string(),
                f.invocations.to_string(),
                f.errors.to_string(),
                f.throttles.to_string(),
                f.cold_starts.to_string(),
                format!("{:.2}", f.p50_ms),
                format!("{:.2}", f.p99_ms),
            ]);
        }
        for r in &app.routes {
            routes.push(vec![
                format!("{} {}{}", r.method, "", r.path),
                format!("{}/{}", app.name, r.function),
            ]);
        }
    }
    let mut rules = vec![
        [
            "RULE -> TARGET",
            "MATCHED",
            "DELIVERED",
            "RETRIED",
            "FAILED",
            "DEAD-LETTERED",
            "PENDING",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for app in &report.apps {
        for r in &app.rules {
            for t in &r.targets {
                rules.push(vec![
                    format!("{}/{} -> {}", app.name, r.name, t.target),
                    t.matched.to_string(),
                    t.delivered.to_string(),
                    t.retried.to_string(),
                    t.failed.to_string(),
                    t.dead_lettered.to_string(),
                    t.pending.to_string(),
                ]);
            }
        }
    }
    let mut tables = vec![apps, functions, routes];
    if stores.len() > 1 {
        tables.push(stores);
    }
    if queues.len() > 1 {
        tables.push(queues);
    }
    if triggers.len() > 1 {
        tables.push(triggers);
    }
    if rules.len() > 1 {
        tables.push(rules);
    }
    for table in tables {
        out.push('\n');
        out.push_str(&table_text(&table));
    }
    out
}

pub fn table_text(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<width$}", width = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
