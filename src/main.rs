//! The `herald` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use herald::config::{Config, IoMode, LogFormat, Overrides};
use herald::identity::principal;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `herald --version`: the package version and the git revision it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("HERALD_GIT_REVISION"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "herald",
    version = VERSION,
    about = "A self-hosted realtime backend with a SignalR-compatible hub"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Check or print configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Mint a token signed with the configured access key and print it.
    Token(TokenArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Configuration file (default: the embedded config/herald.toml).
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, IP:PORT (port 0 picks a free port); env HERALD_SERVER_LISTEN.
    #[arg(long)]
    listen: Option<String>,
    /// Shard threads (0 = one per core); env HERALD_SERVER_SHARDS.
    #[arg(long)]
    shards: Option<usize>,
    /// I/O backend; env HERALD_SERVER_IO.
    #[arg(long, value_parser = ["auto", "uring", "epoll"])]
    io: Option<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file (with the environment applied); exit 2 with the error.
    Check { file: PathBuf },
    /// Print the default configuration, every key commented.
    Default,
}

#[derive(Args)]
struct TokenArgs {
    /// Configuration file whose access key signs the token (default: embedded).
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    /// A client token for this user id (connects to hubs).
    #[arg(long, conflicts_with = "server", required_unless_present = "server")]
    user: Option<String>,
    /// A server token (calls the REST API).
    #[arg(long)]
    server: bool,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl_secs: u64,
    /// Audience (`aud`) to put in the token.
    #[arg(long)]
    audience: Option<String>,
}

fn load(path: Option<&PathBuf>, overrides: &Overrides) -> Result<Config, String> {
    Config::load(path.map(PathBuf::as_path), std::env::vars(), overrides).map_err(|e| e.to_string())
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let overrides = Overrides {
                listen: args.listen,
                shards: args.shards,
                io: args
                    .io
                    .map(|io| io.parse::<IoMode>().expect("clap checked the value")),
            };
            let config = match load(args.config.as_ref(), &overrides) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("herald: configuration error: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&config);
            for warning in &config.warnings {
                tracing::warn!("{warning}");
            }
            match herald::runtime::serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("herald: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config(ConfigCommand::Check { file }) => {
            match load(Some(&file), &Overrides::default()) {
                Ok(config) => {
                    for warning in &config.warnings {
                        eprintln!("{}: warning: {warning}", file.display());
                    }
                    println!("{}: ok", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    ExitCode::from(2)
                }
            }
        }
        Command::Config(ConfigCommand::Default) => {
            print!("{}", herald::config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
        Command::Token(args) => {
            let config = match load(args.config.as_ref(), &Overrides::default()) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("herald: configuration error: {e}");
                    return ExitCode::from(2);
                }
            };
            let key = config.auth.access_key.as_bytes();
            let token = if args.server {
                principal::mint_server(key, args.ttl_secs, args.audience.as_deref())
            } else {
                principal::mint_client(
                    key,
                    args.user.as_deref(),
                    args.ttl_secs,
                    args.audience.as_deref(),
                )
            };
            println!("{token}");
            ExitCode::SUCCESS
        }
    }
}
