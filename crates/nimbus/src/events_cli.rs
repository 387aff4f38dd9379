//! The event bus verbs, `nimbus events put|rules|replay APP`, and the schedule
//! verb, `nimbus schedule ls APP`, over the events API.

use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli_error::CliError;
use crate::client::Client;
use crate::commands::table_text;

type CliResult = Result<(), CliError>;

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// Put one event into the app's bus; prints its id and the rules it matched
    /// once it is durable.
    Put {
        app: String,
        /// The CloudEvent `type`, e.g. `order.placed`.
        #[arg(long = "type", required_unless_present = "file")]
        ty: Option<String>,
        /// The CloudEvent `source`, e.g. `shop/checkout`.
        #[arg(long, required_unless_present = "file")]
        source: Option<String>,
        #[arg(long)]
        subject: Option<String>,
        /// The event's data, JSON (or plain text).
        #[arg(long)]
        data: Option<String>,
        /// The event id (default: a new one).
        #[arg(long)]
        id: Option<String>,
        /// A CloudEvent (structured JSON) or a list of them, from a file (`-`: stdin).
        #[arg(long, conflicts_with_all = ["ty", "source", "subject", "data", "id"])]
        file: Option<PathBuf>,
    },
    /// The app's bus rules, with what each target matched, delivered, retried,
    /// failed and dead-lettered.
    Rules { app: String },
    /// Put archived events again, through the current rules.
    Replay {
        app: String,
        /// Start: RFC 3339 time, or a duration ago such as `1h`.
        #[arg(long)]
        from: String,
        /// End (default: now).
        #[arg(long)]
        to: Option<String>,
    },
}

fn new_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("cli-{nanos:x}-{:x}", std::process::id())
}

pub async fn events(client: &Client, command: EventsCommand, json_out: bool) -> CliResult {
    match command {
        EventsCommand::Put {
            app,
            ty,
            source,
            subject,
            data,
            id,
            file,
        } => {
            let body = match file {
                Some(path) => {
                    let text = if path.as_os_str() == "-" {
                        std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
                    } else {
                        std::fs::read_to_string(&path)
                            .with_context(|| format!("cannot read `{}`", path.display()))?
                    };
                    serde_json::from_str::<Value>(&text)
                        .with_context(|| format!("`{}` is not JSON", path.display()))?
                }
                None => {
                    let mut event = json!({
                        "specversion": "1.0",
                        "id": id.unwrap_or_else(new_id),
                        "type": ty,
                        "source": source,
                    });
                    if let Some(s) = subject {
                        event["subject"] = s.into();
                    }
                    if let Some(d) = data {
                        match serde_json::from_str::<Value>(&d) {
                            Ok(v) => {
                                event["datacontenttype"] = "application/json".into();
                                event["data"] = v;
                            }
                            Err(_) => {
                                event["datacontenttype"] = "text/plain".into();
                                event["data"] = d.into();
                            }
                        }
                    }
                    event
                }
            };
            let req = client
                .request(Method::POST, &format!("/v1/apps/{app}/events"))
                .json(&body);
            let result: Value = client.send_json(req).await?;
            if json_out {
                crate::data_cli::print_json(&result);
            }
            let results = result["results"].as_array().cloned().unwrap_or_default();
            let mut failed = Vec::new();
            for r in &results {
                if let Some(err) = r.get("error") {
                    failed.push(err["message"].as_str().unwrap_or_default().to_string());
                } else if !json_out {
                    let rules: Vec<&str> = r["matched_rules"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    let matched = if rules.is_empty() {
                        "matched no rule".to_string()
                    } else {
                        format!("matched {}", rules.join(", "))
                    };
                    println!("{}  {matched}", r["id"].as_str().unwrap_or_default());
                }
            }
            if !failed.is_empty() {
                return Err(
                    anyhow!("{} event(s) refused: {}", failed.len(), failed.join("; ")).into(),
                );
            }
        }
        EventsCommand::Rules { app } => {
            let req = client.request(Method::GET, &format!("/v1/apps/{app}/bus/rules"));
            let result: Value = client.send_json(req).await?;
            if json_out {
                crate::data_cli::print_json(&result);
                return Ok(());
            }
            let mut rows = vec![
                [
                    "RULE",
                    "TARGET",
                    "ENABLED",
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
            for rule in result["rules"].as_array().into_iter().flatten() {
                for t in rule["targets"].as_array().into_iter().flatten() {
                    let n = |k: &str| t[k].to_string();
                    rows.push(vec![
                        rule["name"].as_str().unwrap_or_default().to_string(),
                        t["target"].as_str().unwrap_or_default().to_string(),
                        rule["enabled"].to_string(),
                        n("matched"),
                        n("delivered"),
                        n("retried"),
                        n("failed"),
                        n("dead_lettered"),
                        n("pending"),
                    ]);
                }
            }
            print!("{}", table_text(&rows));
        }
        EventsCommand::Replay { app, from, to } => {
            let mut body = json!({ "from": from });
            if let Some(to) = to {
                body["to"] = to.into();
            }
            let req = client
                .request(Method::POST, &format!("/v1/apps/{app}/events/replay"))
                .json(&body);
            let result: Value = client.send_json(req).await?;
            if json_out {
                crate::data_cli::print_json(&result);
            } else {
                println!("replayed {} event(s)", result["replayed"]);
            }
        }
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// The app's schedules: when they run, their next and last runs, their target.
    Ls { app: String },
}

pub async fn schedule(client: &Client, command: ScheduleCommand, json_out: bool) -> CliResult {
    let ScheduleCommand::Ls { app } = command;
    let req = client.request(Method::GET, &format!("/v1/apps/{app}/schedules"));
    let result: Value = client.send_json(req).await?;
    if json_out {
        crate::data_cli::print_json(&result);
        return Ok(());
    }
    let mut rows = vec![
        [
            "SCHEDULE", "WHEN", "TARGET", "NEXT RUN", "LAST RUN", "FIRED", "FAILED",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for s in result["schedules"].as_array().into_iter().flatten() {
        let text = |k: &str| s[k].as_str().unwrap_or("-").to_string();
        rows.push(vec![
            text("name"),
            text("when"),
            text("target"),
            text("next_run"),
            text("last_run"),
            s["fired"].to_string(),
            s["failed"].to_string(),
        ]);
    }
    print!("{}", table_text(&rows));
    Ok(())
}
