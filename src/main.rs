//! The `agents-api` command line.

use std::collections::HashMap;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use uuid::Uuid;

use agents_api::config::{AppEnv, Config};

/// mimalloc instead of glibc's malloc: allocation and free took ~14 % of the server's CPU
/// on the list route (bench/README.md, "What each change gained").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "agents-api",
    version,
    about = "AI sales agents over Kommo CRM: the API server"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP, the metrics listener and the job workers (the default).
    Serve {
        /// Apply migrations (with DATABASE_MIGRATION_URL) before serving.
        #[arg(long)]
        migrate: bool,
    },
    /// Apply migrations/ with DATABASE_MIGRATION_URL (else DATABASE_URL).
    Migrate,
    /// Validate the configuration and print every problem.
    CheckConfig,
    /// Print a signed access token for local use (refused in production).
    DevToken {
        #[arg(long)]
        user: Uuid,
        #[arg(long)]
        email: Option<String>,
        #[arg(long, default_value = "1h", value_parser = agents_api::parse_ttl)]
        ttl: std::time::Duration,
    },
    /// Re-encrypt every stored secret with the active (first) key of ENCRYPTION_KEYS,
    /// connecting with DATABASE_MIGRATION_URL (the owner of the tables).
    RotateKeys,
    /// Create (or repair) the server's login role NAME in api_runtime, never superuser
    /// or BYPASSRLS, as DATABASE_MIGRATION_URL after `migrate`; its password, when set,
    /// comes from RUNTIME_ROLE_PASSWORD (never the command line).
    RuntimeRole { name: String },
    /// Print the OpenAPI 3.1 document.
    Openapi,
}

fn main() -> ExitCode {
    let dotenv = dotenv_file();
    let lookup = |key: &str| std::env::var(key).ok().or_else(|| dotenv.get(key).cloned());
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve { migrate: false });

    if let Command::Openapi = command {
        return match serde_json::to_string_pretty(&agents_api::openapi::document()) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("cannot render the OpenAPI document: {e}")),
        };
    }

    // `migrate` runs before anything else exists (a Kubernetes Job, a first deploy): it
    // needs only the database settings.
    let loaded = match command {
        Command::Migrate | Command::RuntimeRole { .. } => Config::from_lookup_for_migration(lookup),
        _ => Config::from_lookup(lookup),
    };
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };

    match command {
        Command::CheckConfig => {
            println!(
                "configuration OK (APP_ENV={}, HTTP_ADDR={}, {} encryption key(s))",
                config.app_env.as_str(),
                config.http_addr,
                config.encryption_keys.len()
            );
            ExitCode::SUCCESS
        }
        Command::DevToken { user, email, ttl } => {
            if config.app_env == AppEnv::Production {
                return fail("dev-token is refused when APP_ENV=production".into());
            }
            match agents_api::http::auth::mint_token(&config, user, email.as_deref(), ttl) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("cannot sign a token: {e}")),
            }
        }
        Command::Migrate => run_async(config, lookup("RUST_LOG"), false, true),
        Command::Serve { migrate } => run_async(config, lookup("RUST_LOG"), true, migrate),
        Command::RotateKeys => rotate_keys(config),
        Command::RuntimeRole { name } => {
            runtime_role(config, &name, lookup("RUNTIME_ROLE_PASSWORD"))
        }
        Command::Openapi => ExitCode::SUCCESS,
    }
}

fn runtime_role(config: Config, name: &str, password: Option<String>) -> ExitCode {
    let password = password.filter(|p| !p.is_empty());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let outcome = runtime.block_on(async {
        let pool = agents_api::db::owner_pool(&config, "runtime-role").await?;
        let done = match pool.acquire().await {
            Ok(mut conn) => {
                agents_api::db::ensure_runtime_role(&mut conn, name, password.as_deref()).await
            }
            Err(e) => Err(e.into()),
        };
        pool.close().await;
        done
    });
    match outcome {
        Ok(()) => {
            println!("runtime role {name} is ready (member of api_runtime)");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("{e:#}")),
    }
}

fn run_async(config: Config, log_filter: Option<String>, serve: bool, migrate: bool) -> ExitCode {
    // Sentry before the runtime; its guard lives until the process ends (and flushes).
    let _sentry = agents_api::telemetry::init_sentry(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let outcome = runtime.block_on(async move {
        let telemetry = agents_api::telemetry::init(&config, log_filter.as_deref());
        let outcome = run(config, serve, migrate).await;
        telemetry.shutdown();
        outcome
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("{e:#}")),
    }
}

async fn run(config: Config, serve: bool, migrate: bool) -> anyhow::Result<()> {
    {
        if migrate {
            agents_api::db::migrate(&config).await?;
            tracing::info!("migrations applied");
        }
        if serve {
            agents_api::serve(config).await?;
        }
        Ok(())
    }
}

fn rotate_keys(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(agents_api::crypto::rotate_all(&config)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("rotate-keys: {e:#}")),
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// Loads `.env` from the working directory when present; real environment variables win.
/// The variables of a `.env` file in the working directory, when there is one. They are
/// looked up after the real environment (which wins) and never written into it.
fn dotenv_file() -> HashMap<String, String> {
    let Ok(text) = std::fs::read_to_string(".env") else {
        return HashMap::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| {
            (
                key.trim().to_string(),
                value.trim().trim_matches('"').to_string(),
            )
        })
        .collect()
}
