//! `nimbus logs APP[/FUNCTION]`: an app's log records over the logs API, the
//! newest ones (or all since a time), then, with `-f`, each new one as it is
//! written.

use clap::Args;
use reqwest::Method;
use serde_json::Value;

use crate::cli_error::CliError;
use crate::client::Client;

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// APP or APP/FUNCTION.
    target: String,
    /// Keep printing records as they are written, until Ctrl-C.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Records since this time: a duration ago (`10m`), RFC 3339 time or Unix
    /// milliseconds (default: the last `--limit` records).
    #[arg(long)]
    since: Option<String>,
    /// Only records at this level or above: trace, debug, info, warn, error.
    #[arg(long)]
    level: Option<String>,
    /// Only records whose message contains TEXT (case-sensitive).
    #[arg(long)]
    grep: Option<String>,
    /// Only the records of one invocation (its request id).
    #[arg(long)]
    invocation: Option<String>,
    /// How many of the newest records to show without `--since`.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

/// One page of the logs API, after `after` (or the newest `limit`).
async fn page(
    client: &Client,
    app: &str,
    filters: &[(&str, String)],
    after: Option<u64>,
    extra: &[(&str, String)],
) -> anyhow::Result<(Vec<Value>, u64)> {
    let mut req = client
        .request(Method::GET, &format!("/v1/apps/{app}/logs"))
        .query(filters)
        .query(extra);
    if let Some(after) = after {
        req = req.query(&[("after", after)]);
    }
    let page: Value = client.send_json(req).await?;
    let records = page["records"].as_array().cloned().unwrap_or_default();
    Ok((records, page["next"].as_u64().unwrap_or(0)))
}

fn print(record: &Value, json: bool) {
    if json {
        println!("{record}");
        return;
    }
    let text = |k: &str| record[k].as_str().unwrap_or_default();
    let function = match text("function") {
        "" => "-",
        f => f,
    };
    let invocation = match text("invocation") {
        "" => String::new(),
        id => format!(" [{id}]"),
    };
    println!(
        "{} {:<5} {function}{invocation} {}",
        nimbus_data::catalog::rfc3339(record["time"].as_u64().unwrap_or(0)),
        text("level").to_uppercase(),
        text("message")
    );
}

pub async fn logs(client: &Client, args: LogsArgs, json: bool) -> Result<(), CliError> {
    let (app, function) = match args.target.split_once('/') {
        Some((app, function)) => (app, Some(function)),
        None => (args.target.as_str(), None),
    };
    let mut filters: Vec<(&str, String)> = Vec::new();
    for (key, value) in [
        ("function", function.map(str::to_string)),
        ("level", args.level),
        ("grep", args.grep),
        ("invocation", args.invocation),
    ] {
        if let Some(value) = value {
            filters.push((key, value));
        }
    }
    let limit = args.limit.to_string();
    let mut next = match args.since {
        // Everything since then, page by page.
        Some(since) => {
            let extra = [("since", since), ("limit", "1000".to_string())];
            let mut after = None;
            loop {
                let (records, next) = page(client, app, &filters, after, &extra).await?;
                records.iter().for_each(|r| print(r, json));
                after = Some(next);
                if records.len() < 1000 {
                    break next;
                }
            }
        }
        None => {
            let extra = [("tail", "true".to_string()), ("limit", limit)];
            let (records, next) = page(client, app, &filters, None, &extra).await?;
            records.iter().for_each(|r| print(r, json));
            next
        }
    };
    if !args.follow {
        return Ok(());
    }
    let extra = [("wait", "20".to_string()), ("limit", "1000".to_string())];
    loop {
        let (records, after) = page(client, app, &filters, Some(next), &extra).await?;
        records.iter().for_each(|r| print(r, json));
        next = after;
    }
}
