//! `nimbus usage [APP]`: metered usage and its cost as a table, JSON or CSV;
//! `nimbus metrics APP/FUNCTION`: one function's figures per time window; and
//! `nimbus diagram [APP]`: the deployed app drawn.

use clap::{Args, ValueEnum};
use nimbus_ops::usage::UsageLine;
use nimbus_ops::usage::api::{FunctionMetrics, UsageReport};
use reqwest::Method;

use crate::cli_error::CliError;
use crate::client::Client;

#[derive(Args, Debug)]
pub struct UsageArgs {
    /// Only this app (default: every app on the node).
    app: Option<String>,
    /// Usage since this time: a duration ago (`30d`), RFC 3339 time or Unix
    /// milliseconds. Meters are hourly: the hour it falls in counts whole.
    #[arg(long, default_value = "30d")]
    since: String,
    /// One line per app (default), function, resource or UTC day.
    #[arg(long, value_enum, default_value_t = By::App)]
    by: By,
    /// `table` (default) or `csv`; `--json` prints the API's answer.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum By {
    App,
    Function,
    Resource,
    Day,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
enum Format {
    Table,
    Csv,
}

pub async fn usage(client: &Client, args: UsageArgs, json: bool) -> Result<(), CliError> {
    let by = match args.by {
        By::App => "app",
        By::Function => "function",
        By::Resource => "resource",
        By::Day => "day",
    };
    let mut query = vec![("since", args.since), ("by", by.to_string())];
    if let Some(app) = args.app {
        query.push(("app", app));
    }
    let req = client.request(Method::GET, "/v1/usage").query(&query);
    let Some(report) = fetch::<UsageReport>(client, req, json).await? else {
        return Ok(());
    };
    let rows: Vec<Vec<String>> = report
        .lines
        .iter()
        .chain([&report.total])
        .map(|l| columns(l, args.format == Format::Csv))
        .collect();
    let header = [
        "app",
        by,
        "requests",
        "invocations",
        "errors",
        "gb_seconds",
        "messages",
        "events",
        "stored_gb_hours",
        "transfer_out_bytes",
        &format!("cost_{}", report.currency.to_lowercase()),
    ];
    match args.format {
        Format::Csv => {
            println!("{}", header.join(","));
            for row in rows.iter().take(rows.len() - 1) {
                println!(
                    "{}",
                    row.iter()
                        .map(|c| csv_field(c))
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
        }
        Format::Table => {
            if report.lines.is_empty() {
                println!(
                    "no usage since {}",
                    nimbus_data::catalog::rfc3339(report.since * 1000)
                );
                return Ok(());
            }
            let header: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
            print_table(&header, &rows);
        }
    }
    Ok(())
}

/// The answer to `req`; with `--json` it is printed as it came instead (`None`).
async fn fetch<T: serde::de::DeserializeOwned>(
    client: &Client,
    req: reqwest::RequestBuilder,
    json: bool,
) -> Result<Option<T>, CliError> {
    let value: serde_json::Value = client.send_json(req).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(None);
    }
    let parsed = serde_json::from_value(value).map_err(anyhow::Error::from)?;
    Ok(Some(parsed))
}

/// A line's cells; CSV keeps full precision, the table rounds for reading.
fn columns(l: &UsageLine, exact: bool) -> Vec<String> {
    let float = |v: f64, places: usize| {
        if exact {
            v.to_string()
        } else {
            format!("{v:.places$}")
        }
    };
    vec![
        l.app.clone(),
        l.key.clone(),
        l.requests.to_string(),
        l.invocations.to_string(),
        l.errors.to_string(),
        float(l.gb_seconds, 3),
        l.messages.to_string(),
        l.events.to_string(),
        float(l.stored_gb_hours, 6),
        l.transfer_out_bytes.to_string(),
        float(l.cost, 6),
    ]
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn print_table(header: &[String], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i < 2 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header);
    rows.iter().for_each(|r| line(r));
}

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// APP/FUNCTION.
    target: String,
    /// From this time: a duration ago (`1h`), RFC 3339 time or Unix milliseconds.
    #[arg(long, default_value = "1h")]
    since: String,
    /// Window length, whole minutes (default: the range in 12 windows).
    #[arg(long)]
    window: Option<String>,
}

pub async fn metrics(client: &Client, args: MetricsArgs, json: bool) -> Result<(), CliError> {
    let Some((app, function)) = args.target.split_once('/') else {
        return Err(
            anyhow::anyhow!("`{}` names no function; use APP/FUNCTION", args.target).into(),
        );
    };
    let mut query = vec![("since", args.since)];
    if let Some(window) = args.window {
        query.push(("window", window));
    }
    let req = client
        .request(
            Method::GET,
            &format!("/v1/apps/{app}/functions/{function}/metrics"),
        )
        .query(&query);
    let Some(m) = fetch::<FunctionMetrics>(client, req, json).await? else {
        return Ok(());
    };
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let header: Vec<String> = [
        "WINDOW",
        "INVOCATIONS",
        "ERRORS",
        "THROTTLES",
        "TIMEOUTS",
        "COLD",
        "P50_MS",
        "P90_MS",
        "P99_MS",
        "GB_SECONDS",
    ]
    .map(String::from)
    .to_vec();
    let rows: Vec<Vec<String>> = m
        .windows
        .iter()
        .map(|w| (nimbus_data::catalog::rfc3339(w.start * 1000), w))
        .chain([("total".to_string(), &m.total)])
        .map(|(start, w)| {
            vec![
                start,
                w.invocations.to_string(),
                w.errors.to_string(),
                w.throttles.to_string(),
                w.timeouts.to_string(),
                w.cold_starts.to_string(),
                ms(w.p50_ms),
                ms(w.p90_ms),
                ms(w.p99_ms),
                format!("{:.3}", w.gb_seconds),
            ]
        })
        .collect();
    print_table(&header, &rows);
    Ok(())
}

#[derive(Args, Debug)]
pub struct DiagramArgs {
    /// The app (default: the only app on the node).
    app: Option<String>,
    #[arg(long, value_enum, default_value_t = DiagramFormat::Svg)]
    format: DiagramFormat,
    /// Write to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<std::path::PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum DiagramFormat {
    Svg,
    Mermaid,
    Dot,
}

pub async fn diagram(client: &Client, args: DiagramArgs) -> Result<(), CliError> {
    let app = match args.app {
        Some(app) => app,
        None => {
            let apps: Vec<nimbus_core::api::AppSummary> = client
                .send_json(client.request(Method::GET, "/v1/apps"))
                .await?;
            match apps.as_slice() {
                [one] => one.name.clone(),
                [] => return Err(anyhow::anyhow!("no app is deployed on the node").into()),
                many => {
                    let names: Vec<&str> = many.iter().map(|a| a.name.as_str()).collect();
                    return Err(anyhow::anyhow!(
                        "the node serves {} apps ({}); name one: nimbus diagram APP",
                        names.len(),
                        names.join(", ")
                    )
                    .into());
                }
            }
        }
    };
    let format = match args.format {
        DiagramFormat::Svg => "svg",
        DiagramFormat::Mermaid => "mermaid",
        DiagramFormat::Dot => "dot",
    };
    let req = client
        .request(Method::GET, &format!("/v1/apps/{app}/diagram"))
        .query(&[("format", format)]);
    let text = client
        .send(req)
        .await?
        .text()
        .await
        .map_err(anyhow::Error::from)?;
    match args.output {
        Some(path) => std::fs::write(&path, text)
            .map_err(|e| anyhow::anyhow!("cannot write `{}`: {e}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}
