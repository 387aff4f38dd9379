//! The `nimbus` binary: the CLI and the node, in one executable.

mod cli_error;
mod client;
mod commands;
mod data_cli;
mod events_cli;
mod loader;
mod logs_cli;
mod node;
mod topic_cli;
mod usage_cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

// Many small, short-lived allocations per request (HTTP, wasi:http resources):
// mimalloc serves them measurably faster than glibc's malloc (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Nimbus: a self-hostable serverless platform. Declare an app in `nimbus.toml`,
/// run `nimbus up`, call it over HTTP.
#[derive(Parser, Debug)]
#[command(name = "nimbus", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build the app in DIR, start a node, deploy the app and serve it until Ctrl-C.
    Up {
        /// Folder with `nimbus.toml` (or the manifest file itself).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Skip the functions' `build` commands.
        #[arg(long)]
        no_build: bool,
        /// Allow a redeploy that deletes stores (and their data) the manifest no longer declares.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Start a node with no app, waiting for deploys.
    Serve {
        /// The app that serves requests whose Host header selects no app.
        #[arg(long)]
        default_app: Option<String>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Deploy the app in DIR to a running node: print the plan, then apply it.
    Deploy {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Run the functions' `build` commands first.
        #[arg(long)]
        build: bool,
        /// Print the plan without applying it.
        #[arg(long)]
        dry_run: bool,
        /// Allow a deploy that deletes stores (and their data) the manifest no longer declares.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Call a function directly (HTTP or event function), bypassing routes.
    Invoke {
        #[command(flatten)]
        args: commands::InvokeArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// An async invocation (`nimbus invoke --async`): status, attempts, output or error.
    Invocation {
        id: String,
        /// Wait until it succeeded or failed.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show apps, functions, routes, instances, invocations, cold starts and latency.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// An app's (or one function's) log: output and platform records, filtered,
    /// followed with `-f`.
    Logs {
        #[command(flatten)]
        args: logs_cli::LogsArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One function's figures per time window: invocations, errors, throttles,
    /// timeouts, cold starts and duration percentiles.
    Metrics {
        #[command(flatten)]
        args: usage_cli::MetricsArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The deployed app drawn as the reference architecture's L1 view: channels,
    /// edge, compute and platform services, an arrow per trigger by kind.
    Diagram {
        #[command(flatten)]
        args: usage_cli::DiagramArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Metered usage and its cost, per app, function, resource or day.
    Usage {
        #[command(flatten)]
        args: usage_cli::UsageArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Key-value stores: set, get, del, ls, incr (stores named APP/STORE).
    Kv {
        #[command(subcommand)]
        command: data_cli::KvCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Document stores: put, get, patch, del, query (collections named APP/COLLECTION).
    Docs {
        #[command(subcommand)]
        command: data_cli::DocsCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Buckets: put, get, ls, rm, url (buckets named APP/BUCKET).
    Blob {
        #[command(subcommand)]
        command: data_cli::BlobCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Queues: send, recv, del, purge, stats, redrive (queues named APP/QUEUE).
    Queue {
        #[command(subcommand)]
        command: data_cli::QueueCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Queue triggers: ls APP, enable|disable APP/TRIGGER (no redeploy needed).
    Trigger {
        #[command(subcommand)]
        command: data_cli::TriggerCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Notification topics: publish, subs, subscribe, unsubscribe (topics named APP/TOPIC).
    Topic {
        #[command(subcommand)]
        command: topic_cli::TopicCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The app's event bus: put events, list rules with delivery counts, replay.
    Events {
        #[command(subcommand)]
        command: events_cli::EventsCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Schedules: ls APP (when each runs next).
    Schedule {
        #[command(subcommand)]
        command: events_cli::ScheduleCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A store's change feed (CloudEvents, oldest first), e.g. `shop/kv/carts`.
    Changes {
        /// APP/KIND/NAME with KIND kv, docs or buckets.
        store: String,
        /// Only changes after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove an app from a running node (with its stores' data, given --yes).
    Delete {
        app: String,
        /// Allow deleting the app's stores and their data.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Settings of a node (`up`, `serve`).
#[derive(Args, Debug, Clone)]
struct NodeArgs {
    /// Gateway address (the apps' HTTP routes).
    #[arg(long, default_value = "127.0.0.1:8080", env = "NIMBUS_LISTEN")]
    listen: SocketAddr,
    /// Admin API address (deploys, status).
    #[arg(long, default_value = "127.0.0.1:8081", env = "NIMBUS_ADMIN_LISTEN")]
    admin_listen: SocketAddr,
    /// Where the node keeps its state (database, components, compiled cache, token).
    #[arg(long, env = "NIMBUS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Largest request body the gateway accepts, in bytes (413 beyond).
    #[arg(long, default_value_t = 10 << 20)]
    max_body_size: u64,
    /// Function instances alive at once on this node.
    #[arg(long, default_value_t = 1000)]
    max_instances: u32,
    /// What an acknowledged write survives: `power-loss` (every commit fsynced) or
    /// `crash` (a crash or kill -9 of the node, not of the machine; faster writes).
    #[arg(long, value_enum, default_value_t = DurabilityArg::PowerLoss, env = "NIMBUS_DURABILITY")]
    durability: DurabilityArg,
    /// How long function logs are kept (`nimbus logs`).
    #[arg(long, default_value = "7d", value_parser = nimbus_core::duration::parse)]
    log_retention: std::time::Duration,
    /// Most bytes the function logs take on disk; the oldest records go first.
    #[arg(long, default_value_t = 256 << 20)]
    log_max_bytes: u64,
    /// Lines of output per second each function may write; the rest are counted
    /// in a "dropped N lines" record (0: no limit).
    #[arg(long, default_value_t = 1000)]
    log_rate: u32,
    /// A price sheet (TOML) for `nimbus usage`; keys it leaves out keep the
    /// defaults (docs/usage.md).
    #[arg(long, value_name = "FILE")]
    prices: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum DurabilityArg {
    PowerLoss,
    Crash,
}

/// How client verbs reach a node.
#[derive(Args, Debug, Clone)]
struct ClientArgs {
    /// Admin API of the node.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8081",
        env = "NIMBUS_SERVER",
        global = true
    )]
    server: String,
    /// Admin token (default: read from the data dir).
    #[arg(long, env = "NIMBUS_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// The node's data dir, where the admin token is.
    #[arg(long, env = "NIMBUS_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// The default data dir: `$XDG_DATA_HOME/nimbus`, else `~/.local/share/nimbus`.
fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("nimbus");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/nimbus"),
        None => PathBuf::from(".nimbus"),
    }
}

/// The node's log: `NIMBUS_LOG` (default `info`) filters what reaches stderr;
/// the function logs (`nimbus logs`) take every app's record at info and above,
/// whatever stderr shows. Returns the handle the node attaches its log store to.
fn init_logging() -> nimbus_ops::logs::capture::Capture {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, filter::LevelFilter};
    let filter = EnvFilter::try_from_env("NIMBUS_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let capture = nimbus_ops::logs::capture::Capture::new();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter),
        )
        .with(capture.layer().with_filter(LevelFilter::INFO))
        .init();
    capture
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up {
                dir,
                no_build,
                yes,
                node,
            } => {
                let capture = init_logging();
                commands::up(&dir, no_build, yes, node.into_config(None, capture)).await
            }
            Command::Serve { default_app, node } => {
                let capture = init_logging();
                commands::serve(node.into_config(default_app, capture)).await
            }
            Command::Deploy {
                dir,
                build,
                dry_run,
                yes,
                client,
            } => {
                commands::deploy(&dir, build, dry_run, yes, || client.connect(), client.json).await
            }
            Command::Invoke { args, client } => {
                commands::invoke(&client.connect()?, args, client.json).await
            }
            Command::Invocation { id, wait, client } => {
                commands::invocation(&client.connect()?, &id, wait, client.json).await
            }
            Command::Status { client } => commands::status(&client.connect()?, client.json).await,
            Command::Logs { args, client } => {
                logs_cli::logs(&client.connect()?, args, client.json).await
            }
            Command::Metrics { args, client } => {
                usage_cli::metrics(&client.connect()?, args, client.json).await
            }
            Command::Diagram { args, client } => usage_cli::diagram(&client.connect()?, args).await,
            Command::Usage { args, client } => {
                usage_cli::usage(&client.connect()?, args, client.json).await
            }
            Command::Kv { command, client } => {
                data_cli::kv(&client.connect()?, command, client.json).await
            }
            Command::Docs { command, client } => {
                data_cli::docs(&client.connect()?, command, client.json).await
            }
            Command::Blob { command, client } => {
                data_cli::blob(&client.connect()?, command, client.json).await
            }
            Command::Queue { command, client } => {
                data_cli::queue(&client.connect()?, command, client.json).await
            }
            Command::Trigger { command, client } => {
                data_cli::trigger(&client.connect()?, command, client.json).await
            }
            Command::Topic { command, client } => {
                topic_cli::topic(&client.connect()?, command, client.json).await
            }
            Command::Events { command, client } => {
                events_cli::events(&client.connect()?, command, client.json).await
            }
            Command::Schedule { command, client } => {
                events_cli::schedule(&client.connect()?, command, client.json).await
            }
            Command::Changes {
                store,
                after,
                limit,
                client,
            } => data_cli::changes(&client.connect()?, &store, after, limit, client.json).await,
            Command::Delete { app, yes, client } => {
                commands::delete(&client.connect()?, &app, yes, client.json).await
            }
        }
    });
    // Do not wait for lingering blocking tasks (e.g. a build) on exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => err.report(),
    }
}

impl NodeArgs {
    fn into_config(
        self,
        default_app: Option<String>,
        capture: nimbus_ops::logs::capture::Capture,
    ) -> node::NodeConfig {
        node::NodeConfig {
            logs: nimbus_ops::logs::LogConfig {
                retention: self.log_retention,
                max_bytes: self.log_max_bytes,
            },
            log_rate: self.log_rate,
            prices: self.prices,
            capture,
            listen: self.listen,
            admin_listen: self.admin_listen,
            data_dir: self.data_dir.unwrap_or_else(default_data_dir),
            max_body_bytes: self.max_body_size,
            default_app,
            max_instances: self.max_instances,
            durability: match self.durability {
                DurabilityArg::PowerLoss => nimbus_data::Durability::PowerLoss,
                DurabilityArg::Crash => nimbus_data::Durability::Crash,
            },
        }
    }
}

impl ClientArgs {
    fn connect(&self) -> Result<client::Client, cli_error::CliError> {
        let data_dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        Ok(client::Client::new(
            &self.server,
            self.token.clone(),
            &data_dir,
        )?)
    }
}
