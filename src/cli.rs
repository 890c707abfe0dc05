//! The `medialink` command line (DESIGN §10): one clap definition, one function per
//! subcommand. Errors print one line to stderr and exit non-zero (2: usage or config).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{ServeArgs, StoreArgs};
use crate::policy::Kind;

#[derive(Parser, Debug)]
#[command(
    name = "medialink",
    version,
    about = "Short links that serve verified image and audio bytes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service.
    Serve(Box<ServeArgs>),
    /// Print a short URL for URL (through a running server, or the local store).
    Shorten(ShortenArgs),
    /// Deliver a photo, voice note or text to a lead through the gateway.
    Send(SendArgs),
    /// Write every link as JSON lines, one link a line with its id (stdout without FILE).
    Export(TransferArgs),
    /// Read links as JSON lines (stdin without FILE), keeping ids; links already present are skipped.
    Import(TransferArgs),
    /// Exit 0 when URL answers 200 (the container HEALTHCHECK; no curl needed).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: url::Url,
    },
    /// Apply the store's migrations and exit.
    Migrate(StoreArgs),
    /// Write a self-signed certificate and key for local HTTPS (serve --tls-cert/--tls-key).
    DevCert(crate::tls::DevCertArgs),
    /// Show a link and its delivery trace (fetches of its short URL, gateway sends).
    Inspect(InspectArgs),
    /// Fetch URL as the gateway would and say whether it would take it (exit 0) or not (exit 1).
    Check(CheckArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// Where a command finds links: a running medialink (`--server`, `--token`), else the
/// store itself.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// A running medialink to ask (else the store is used directly).
    #[arg(long, env = "MEDIALINK_SERVER")]
    pub server: Option<url::Url>,
    #[arg(long, env = "MEDIALINK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Base of short URLs when the store is used directly.
    #[arg(
        long,
        env = "MEDIALINK_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub public_url: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

impl Target {
    /// The API client when `--server` is given (then `--token` is required).
    pub fn client(&self) -> Result<Option<crate::client::Client>, Failure> {
        let Some(server) = &self.server else {
            return Ok(None);
        };
        let token = self
            .token
            .as_deref()
            .ok_or_else(|| Failure::usage("--server needs --token (or MEDIALINK_TOKEN)"))?;
        crate::client::Client::new(server.clone(), token.to_owned())
            .map(Some)
            .map_err(|e| Failure::usage(e.to_string()))
    }
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The link id (or its short URL).
    pub id: String,
    /// Print the events endpoint's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    pub url: String,
    /// Media policy: whatsapp or any.
    #[arg(long, default_value = "whatsapp")]
    pub profile: crate::policy::Profile,
    /// What the link would be for: image, audio, voice (a voice note) or any.
    #[arg(long, default_value = "any")]
    pub kind: Kind,
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
    /// Allow upstreams on loopback and private addresses (intranets, tests).
    #[arg(long)]
    pub allow_private: bool,
    /// Whole fetch, body included.
    #[arg(long, default_value = "30s", value_parser = crate::config::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(clap::Args, Debug)]
pub struct ShortenArgs {
    pub url: String,
    #[arg(long, default_value = "any")]
    pub kind: Kind,
    /// Fetch and check the media now (needs a server: --server).
    #[arg(long)]
    pub verify: bool,
    /// Convert into what the phone plays (JPEG, OGG/Opus); default: on for image and
    /// voice under the whatsapp profile.
    #[arg(long, overrides_with = "no_convert")]
    pub convert: bool,
    #[arg(long = "no-convert")]
    pub no_convert: bool,
    /// Keep the verified bytes, so the link outlives its upstream (needs --server).
    #[arg(long)]
    pub pin: bool,
    /// Seconds until the link answers 410 Gone.
    #[arg(long)]
    pub expires_in: Option<u64>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Args, Debug)]
pub struct TransferArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The JSON-lines file.
    pub file: Option<std::path::PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum SendKind {
    Image,
    Audio,
    Text,
}

#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// What to send: image (send-image), audio (a voice note, send-audio) or text.
    #[arg(value_enum)]
    pub kind: SendKind,
    /// Phone number (+7 701 570 55 55) or jid (77015705555@s.whatsapp.net).
    #[arg(long)]
    pub to: String,
    /// The media URL (image, audio).
    #[arg(long, conflicts_with = "text")]
    pub url: Option<String>,
    /// The message (text).
    #[arg(long)]
    pub text: Option<String>,
    #[arg(long)]
    pub caption: Option<String>,
    /// When the media is refused, send a text carrying the short link instead (exit 3).
    #[arg(long)]
    pub fallback_text: bool,
    /// The medialink that makes and serves the short link.
    #[arg(long, env = "MEDIALINK_SERVER")]
    pub server: Option<url::Url>,
    #[arg(long, env = "MEDIALINK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub gateway: crate::config::GatewayArgs,
}

/// The serve flags alone, to build a local state with their defaults (and env).
#[derive(Parser, Debug)]
struct ServeOnly {
    #[command(flatten)]
    args: ServeArgs,
}

/// A failure of a command: the message, and the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(m: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: m.into(),
        }
    }
    pub fn failed(m: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: m.into(),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_logs = matches!(&cli.command, Command::Serve(a) if a.log_format == "json");
    // A one-shot command's stderr is for its one-line error; the service logs more.
    let default_level = if matches!(cli.command, Command::Serve(_) | Command::Send(_)) {
        "info"
    } else {
        "warn"
    };
    init_tracing(json_logs, default_level);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("medialink: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("medialink: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn init_tracing(json: bool, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

async fn dispatch(cmd: Command) -> Result<ExitCode, Failure> {
    match cmd {
        Command::Serve(args) => crate::server::run(*args)
            .await
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| match e {
                crate::server::ServeError::Config(m) => Failure::usage(m),
                other => Failure::failed(other.to_string()),
            }),
        Command::Shorten(args) => shorten(args).await.map(|()| ExitCode::SUCCESS),
        Command::Send(args) => send(args).await,
        Command::Export(args) => export(args).await,
        Command::Healthcheck { url } => {
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(std::time::Duration::from_secs(3))
                .build()
                .map_err(|e| Failure::failed(e.to_string()))?;
            match client.get(url.clone()).send().await {
                Ok(r) if r.status().is_success() => Ok(ExitCode::SUCCESS),
                Ok(r) => Err(Failure::failed(format!("{url} answered {}", r.status()))),
                Err(e) => Err(Failure::failed(format!("{url}: {e}"))),
            }
        }
        Command::Import(args) => import(args).await,
        Command::DevCert(args) => dev_cert(&args).map(|()| ExitCode::SUCCESS),
        Command::Inspect(args) => inspect(args).await,
        Command::Check(args) => check(args).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "medialink", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .map_err(|e| Failure::failed(e.to_string()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate(args) => {
            let key = args.id_key().map_err(Failure::usage)?;
            let store = crate::store::open(&args.location(), key)
                .await
                .map_err(|e| Failure::failed(e.to_string()))?;
            store.close().await;
            println!("migrations applied: {}", redact(&args.location()));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn dev_cert(args: &crate::tls::DevCertArgs) -> Result<(), Failure> {
    let files = crate::tls::dev_cert(&args.hosts)
        .and_then(|c| c.write(&args.out_dir))
        .map_err(|e| Failure::failed(e.to_string()))?;
    println!(
        "wrote {} and {} (self-signed, for {}); serve with --tls-cert {} --tls-key {}",
        files.cert.display(),
        files.key.display(),
        args.hosts.join(", "),
        files.cert.display(),
        files.key.display()
    );
    Ok(())
}

/// Hides a password in a store URL before printing it.
fn redact(location: &str) -> String {
    match url::Url::parse(location) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => location.to_owned(),
    }
}

async fn shorten(args: ShortenArgs) -> Result<(), Failure> {
    if let Some(client) = args.target.client()? {
        let link = client
            .create(&create_body(&args))
            .await
            .map_err(|e| Failure::failed(e.to_string()))?;
        println!("{}", link.short_url);
        return Ok(());
    }
    if args.verify {
        return Err(Failure::usage(
            "--verify fetches the media: give --server (a running medialink)",
        ));
    }
    let mut serve = ServeOnly::try_parse_from(["serve"])
        .map_err(|e| Failure::usage(e.to_string()))?
        .args;
    serve.store = args.target.store.clone();
    let state = crate::server::build_state(
        &serve,
        args.target.public_url.trim_end_matches('/').to_owned(),
        None,
    )
    .await
    .map_err(|e| Failure::failed(e.to_string()))?;
    let req = crate::links::CreateLink {
        url: args.url.clone(),
        kind: args.kind,
        verify: false,
        convert: convert_choice(&args),
        pin: None,
        expires_in: args.expires_in,
    };
    let result = crate::links::create(&state, &req).await;
    state.links.inner().close().await;
    let created = result.map_err(|e| match e {
        crate::links::LinkError::Url(e) => Failure::usage(e.to_string()),
        other => Failure::failed(other.to_string()),
    })?;
    println!(
        "{}",
        crate::links::short_url(&state.public_base, &created.record)
    );
    Ok(())
}

async fn send(args: SendArgs) -> Result<ExitCode, Failure> {
    use crate::sender::{MediaKind, SendRequest};
    let gateway = args
        .gateway
        .gateway()
        .map_err(Failure::usage)?
        .ok_or_else(|| Failure::usage("no gateway configured: set CHATFLOW_TOKEN and CHATFLOW_INSTANCE_ID (or --chatflow-token, --chatflow-instance-id)"))?;
    let kind = match args.kind {
        SendKind::Image => MediaKind::Image,
        SendKind::Audio => MediaKind::Audio,
        SendKind::Text => MediaKind::Text,
    };
    let client = match (&args.server, &args.token) {
        (Some(server), Some(token)) => Some(
            crate::client::Client::new(server.clone(), token.clone())
                .map_err(|e| Failure::usage(e.to_string()))?,
        ),
        _ if kind == MediaKind::Text => None,
        _ => {
            return Err(Failure::usage(
                "media needs a medialink to shorten through: --server URL --token T (or MEDIALINK_SERVER, MEDIALINK_TOKEN)",
            ));
        }
    };
    let req = SendRequest {
        to: args.to,
        kind,
        url: args.url,
        text: args.text,
        caption: args.caption,
        fallback_text: args.fallback_text,
    };
    let outcome = match &client {
        Some(c) => {
            crate::sender::deliver(&gateway, &crate::client::HttpShortener(c.clone()), &req).await
        }
        None => crate::sender::deliver(&gateway, &crate::client::NoShortener, &req).await,
    }
    .map_err(|e| Failure::usage(e.to_string()))?;
    // The gateway answered us, not the server: tell the server, so the link's trace
    // shows the answer beside the gateway's fetch. Best effort: the message is out.
    if let (Some(c), Some(id)) = (
        &client,
        outcome
            .short_url
            .as_deref()
            .and_then(crate::links::id_in_short_url),
    ) && let Err(e) = c.report_send(id.as_str(), kind, &outcome).await
    {
        eprintln!("medialink: the send is not on the link's trace: {e}");
    }
    println!("{}", serde_json::to_string(&outcome).unwrap_or_default());
    Ok(ExitCode::from(outcome.exit_code() as u8))
}

async fn open_store(args: &StoreArgs) -> Result<std::sync::Arc<dyn crate::store::Store>, Failure> {
    let key = args.id_key().map_err(Failure::usage)?;
    crate::store::open(&args.location(), key)
        .await
        .map_err(|e| Failure::failed(e.to_string()))
}

/// For the commands that only read (`inspect`, `export`): they may run beside a server.
async fn open_store_to_read(
    args: &StoreArgs,
) -> Result<std::sync::Arc<dyn crate::store::Store>, Failure> {
    let key = args.id_key().map_err(Failure::usage)?;
    crate::store::open_for_reading(&args.location(), key)
        .await
        .map_err(|e| Failure::failed(e.to_string()))
}

async fn export(args: TransferArgs) -> Result<ExitCode, Failure> {
    use std::io::IsTerminal;
    let store = open_store_to_read(&args.store).await?;
    let mut out: Box<dyn std::io::Write + Send> = match &args.file {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| Failure::failed(format!("{}: {e}", path.display())))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let result =
        crate::transfer::export(store.as_ref(), &mut out, std::io::stderr().is_terminal()).await;
    let flushed = out.flush();
    store.close().await;
    let n = result.map_err(|e| Failure::failed(e.to_string()))?;
    flushed.map_err(|e| Failure::failed(e.to_string()))?;
    eprintln!("exported {n} links");
    Ok(ExitCode::SUCCESS)
}

async fn import(args: TransferArgs) -> Result<ExitCode, Failure> {
    use std::io::IsTerminal;
    let store = open_store(&args.store).await?;
    let mut input: Box<dyn std::io::BufRead + Send> = match &args.file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .map_err(|e| Failure::failed(format!("{}: {e}", path.display())))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    let result =
        crate::transfer::import(store.as_ref(), &mut input, std::io::stderr().is_terminal()).await;
    store.close().await;
    let st = result.map_err(|e| Failure::failed(e.to_string()))?;
    eprintln!(
        "read {} links: {} created, {} already present, {} conflicting ids",
        st.read, st.created, st.skipped, st.conflicts
    );
    Ok(if st.conflicts > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn inspect(args: InspectArgs) -> Result<ExitCode, Failure> {
    // An id, or a short URL pasted from a message.
    let id = crate::ids::LinkId::parse(&args.id)
        .or_else(|| crate::links::id_in_short_url(&args.id))
        .ok_or_else(|| Failure::usage(format!("`{}` is not a link id or short URL", args.id)))?;
    let trace = match args.target.client()? {
        Some(client) => match client.events(id.as_str()).await {
            Ok(t) => t,
            Err(crate::client::ClientError::Problem { status: 404, .. }) => {
                return Err(Failure::failed(format!("no link {id}")));
            }
            Err(e) => return Err(Failure::failed(e.to_string())),
        },
        None => {
            let store = open_store_to_read(&args.target.store).await?;
            let found = crate::inspect::from_store(
                store.as_ref(),
                args.target.public_url.trim_end_matches('/'),
                &id,
            )
            .await;
            store.close().await;
            found
                .map_err(|e| Failure::failed(e.to_string()))?
                .ok_or_else(|| Failure::failed(format!("no link {id}")))?
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&trace).unwrap_or_default()
        );
    } else {
        print!("{}", crate::inspect::to_text(&trace));
    }
    Ok(ExitCode::SUCCESS)
}

async fn check(args: CheckArgs) -> Result<ExitCode, Failure> {
    let fetcher = crate::fetch::Fetcher::new(crate::fetch::FetchConfig {
        timeout: args.timeout,
        allow_private: args.allow_private,
        ..Default::default()
    })
    .map_err(|e| Failure::usage(e.to_string()))?;
    let policy = crate::policy::Policy {
        profile: args.profile,
        // The serve default (--any-max-bytes).
        any_max_bytes: 32 * 1024 * 1024,
    };
    let verdict = crate::check::check(&fetcher, &policy, &args.url, args.kind)
        .await
        .map_err(|e| Failure::usage(e.to_string()))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&verdict).unwrap_or_default()
        );
    } else {
        print!("{}", verdict.to_text());
    }
    Ok(ExitCode::from(verdict.exit_code()))
}

fn convert_choice(args: &ShortenArgs) -> Option<bool> {
    match (args.convert, args.no_convert) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

fn create_body(args: &ShortenArgs) -> serde_json::Value {
    let mut body = serde_json::json!({"url": args.url, "kind": args.kind, "verify": args.verify, "pin": args.pin});
    if let Some(c) = convert_choice(args) {
        body["convert"] = c.into();
    }
    if let Some(e) = args.expires_in {
        body["expires_in"] = e.into();
    }
    body
}
