//! The `herald` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use herald::config::{Config, ConfigError, IoMode, LogFormat, Overrides};
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
    /// Write a new configuration file: the defaults, with a freshly generated access key.
    Init(InitArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Configuration file (default: the embedded config/herald.toml).
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, IP:PORT or HOST:PORT (port 0 picks a free port); env
    /// `HERALD_SERVER_LISTEN`.
    #[arg(long)]
    listen: Option<String>,
    /// Shard threads (0 = one per core); env `HERALD_SERVER_SHARDS`.
    #[arg(long)]
    shards: Option<usize>,
    /// I/O backend; env `HERALD_SERVER_IO`.
    #[arg(long, value_parser = ["auto", "uring", "epoll"])]
    io: Option<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file (with the environment applied); exit 2 with the error.
    Check { file: PathBuf },
    /// Print the default configuration, every key commented.
    Default {
        /// With a freshly generated access key instead of the public development key.
        #[arg(long)]
        secrets: bool,
    },
}

#[derive(Args)]
struct InitArgs {
    /// Where to write it; an existing file is left alone.
    #[arg(default_value = "herald.toml")]
    file: PathBuf,
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

fn load(path: Option<&PathBuf>, overrides: &Overrides) -> Result<Config, ConfigError> {
    Config::load(path.map(PathBuf::as_path), std::env::vars(), overrides)
}

fn init_logging(config: &Config) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Reports why `serve` stopped, once: in the log when errors are logged (so a JSON log
/// collector gets it), else on stderr.
fn report_failure(e: &anyhow::Error) {
    let in_use = e
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::AddrInUse);
    let hint = if in_use {
        " (another process listens there: stop it, or choose another address with --listen \
         or server.listen)"
    } else {
        ""
    };
    if tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!("{e:#}{hint}");
    } else {
        eprintln!("herald: {e:#}{hint}");
    }
}

/// `herald init FILE`: the shipped configuration with a fresh access key, readable by its
/// owner alone (it holds a secret). An existing file is never overwritten.
fn init(file: &std::path::Path) -> ExitCode {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .and_then(|mut f| {
            f.write_all(Config::default_with_fresh_secrets().as_bytes())
                .inspect_err(|_| {
                    // A half-written file would not load: take it away again.
                    let _ = std::fs::remove_file(file);
                })
        });
    match written {
        Ok(()) => {
            eprintln!(
                "{}: written with a fresh auth.access_key; start with: herald serve --config {}",
                file.display(),
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            eprintln!("{}: already exists; left as it is", file.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{}: cannot write: {e}", file.display());
            ExitCode::FAILURE
        }
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
                    report_failure(&e);
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
                // An error that points into the file names it already.
                Err(e) if e.file().is_some() => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    ExitCode::from(2)
                }
            }
        }
        Command::Config(ConfigCommand::Default { secrets: false }) => {
            print!("{}", herald::config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Default { secrets: true }) => {
            print!("{}", Config::default_with_fresh_secrets());
            ExitCode::SUCCESS
        }
        Command::Init(args) => init(&args.file),
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
