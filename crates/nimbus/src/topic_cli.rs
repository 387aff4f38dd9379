//! The topic verbs: `nimbus topic publish|subs|subscribe|unsubscribe APP/TOPIC`.

use anyhow::{Context as _, anyhow};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli_error::CliError;
use crate::client::Client;
use crate::commands::{read_data, table_text};
use crate::data_cli::{print_json, split_store};

type CliResult = Result<(), CliError>;

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Publish BODY (`@FILE`, `@-`); prints the message id and how many
    /// subscriptions it goes to, once it is durable.
    Publish {
        topic: String,
        body: String,
        /// Attribute `NAME=VALUE` (repeatable; a number if VALUE reads as one).
        #[arg(long = "attr")]
        attributes: Vec<String>,
    },
    /// The topic's subscriptions with their delivery counts.
    Subs { topic: String },
    /// Add a subscription (kept across restarts and deploys).
    Subscribe {
        topic: String,
        #[arg(long, group = "sink")]
        queue: Option<String>,
        #[arg(long, group = "sink")]
        function: Option<String>,
        /// An HTTPS URL; deliveries are POSTed, signed with --secret.
        #[arg(long, group = "sink", requires = "secret")]
        webhook: Option<String>,
        #[arg(long)]
        secret: Option<String>,
        /// A filter policy over the attributes, JSON, e.g. '{"kind": ["vip"]}'.
        #[arg(long)]
        filter: Option<String>,
        /// A queue for messages that could not be delivered.
        #[arg(long)]
        dead_letter: Option<String>,
        /// Keep retrying a failed delivery this long, e.g. `1h`.
        #[arg(long, default_value = "1h")]
        retry_for: String,
    },
    /// Remove a subscription added with `subscribe` (by its id, `s1`, …).
    Unsubscribe { topic: String, id: String },
}

pub async fn topic(client: &Client, command: TopicCommand, json_out: bool) -> CliResult {
    match command {
        TopicCommand::Publish {
            topic,
            body,
            attributes,
        } => {
            let (app, topic) = split_store(&topic)?;
            let mut req = client
                .request(
                    Method::POST,
                    &format!("/v1/apps/{app}/topics/{topic}/messages"),
                )
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
            } else {
                println!(
                    "{}  to {} subscription(s)",
                    sent["message_id"].as_str().unwrap_or_default(),
                    sent["deliveries"]
                );
            }
        }
        TopicCommand::Subs { topic } => {
            let (app, topic) = split_store(&topic)?;
            let req = client.request(
                Method::GET,
                &format!("/v1/apps/{app}/topics/{topic}/subscriptions"),
            );
            let result: Value = client.send_json(req).await?;
            if json_out {
                print_json(&result);
                return Ok(());
            }
            let mut rows = vec![
                [
                    "ID",
                    "TARGET",
                    "FILTER",
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
            for s in result["subscriptions"].as_array().into_iter().flatten() {
                let c = &s["counts"];
                let filter = &s["subscription"]["filter"];
                rows.push(vec![
                    s["id"].as_str().unwrap_or_default().to_string(),
                    c["target"].as_str().unwrap_or_default().to_string(),
                    if filter.is_null() {
                        "-".into()
                    } else {
                        filter.to_string()
                    },
                    c["matched"].to_string(),
                    c["delivered"].to_string(),
                    c["retried"].to_string(),
                    c["failed"].to_string(),
                    c["dead_lettered"].to_string(),
                    c["pending"].to_string(),
                ]);
            }
            print!("{}", table_text(&rows));
        }
        TopicCommand::Subscribe {
            topic,
            queue,
            function,
            webhook,
            secret,
            filter,
            dead_letter,
            retry_for,
        } => {
            let (app, topic) = split_store(&topic)?;
            let destination = match (queue, function, webhook) {
                (Some(q), None, None) => json!({ "queue": q }),
                (None, Some(f), None) => json!({ "function": f }),
                (None, None, Some(url)) => {
                    json!({ "webhook": { "url": url, "secret": secret.unwrap_or_default() } })
                }
                _ => return Err(anyhow!("give one of --queue, --function or --webhook").into()),
            };
            let filter: Option<Value> = filter
                .map(|f| serde_json::from_str(&f).context("--filter is not JSON"))
                .transpose()?;
            let retry_ms = nimbus_core::duration::parse(&retry_for)
                .map_err(|e| anyhow!("--retry-for: {e}"))?
                .as_millis() as u64;
            let body = json!({
                "filter": filter,
                "target": {
                    "destination": destination,
                    "input": "event",
                    "retries": 185,
                    "max_event_age": retry_ms,
                    "dead_letter": dead_letter,
                }
            });
            let req = client
                .request(
                    Method::POST,
                    &format!("/v1/apps/{app}/topics/{topic}/subscriptions"),
                )
                .json(&body);
            let result: Value = client.send_json(req).await?;
            if json_out {
                print_json(&result);
            } else {
                println!("{}", result["id"].as_str().unwrap_or_default());
            }
        }
        TopicCommand::Unsubscribe { topic, id } => {
            let (app, topic) = split_store(&topic)?;
            let req = client.request(
                Method::DELETE,
                &format!("/v1/apps/{app}/topics/{topic}/subscriptions/{id}"),
            );
            let result: Value = client.send_json(req).await?;
            if json_out {
                print_json(&result);
            } else {
                println!("removed {id}");
            }
        }
    }
    Ok(())
}
