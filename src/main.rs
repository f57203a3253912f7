//! The `tandem` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;
use tandem::{
    auth::JwtKeys,
    config::{Cli, Command},
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Some(Command::Token(args)) => print_token(&cli.config, &args),
        None | Some(Command::Serve) => serve(cli.config).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tandem: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_token(config: &tandem::Config, args: &tandem::config::TokenArgs) -> anyhow::Result<()> {
    if config.jwt_secret.is_none() {
        eprintln!("tandem: no TANDEM_JWT_SECRET set; signing with the development secret");
    }
    let keys = JwtKeys::new(&config.jwt_secret_or_development());
    let mut claims = JwtKeys::claims_for(&args.user_id, args.ttl);
    claims.name = args.name.clone();
    claims.docs = (!args.docs.is_empty()).then(|| args.docs.clone());
    claims.role = args.role.parse().map_err(anyhow::Error::msg)?;
    println!("{}", keys.mint(&claims)?);
    Ok(())
}

async fn serve(config: tandem::Config) -> anyhow::Result<()> {
    let app = tandem::Application::build(config).await?;
    let stop = app.stop_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received; closing connections and flushing");
        stop.cancel();
    });
    app.run_until_stopped().await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
