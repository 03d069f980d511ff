//! What the `kiln` commands do, so `main.rs` stays a parser.

use anyhow::{Context, Result};
use tokio::net::TcpListener;

use crate::app::{self, AppState};
use crate::config::Config;

/// `kiln serve` (with the API) and `kiln worker` (workers only): runs until Ctrl-C or SIGTERM.
pub async fn serve(mut config: Config, with_api: bool) -> Result<()> {
    if !with_api && config.workers == 0 {
        anyhow::bail!("kiln worker needs --workers 1 or more");
    }
    let bind = config.bind;
    if !with_api {
        // Workers only: listen on an ephemeral loopback port for health checks.
        config.bind = "127.0.0.1:0".parse().expect("valid address");
    }
    let startup = AppState::build(config).await?;
    let listener = TcpListener::bind(startup.state.config.bind)
        .await
        .with_context(|| format!("binding {bind}"))?;
    let addr = listener.local_addr()?;
    println!(
        "kiln {} listening on http://{addr}/ (GraphQL at http://{addr}/graphql)",
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "database: {}  objects: {}  workers: {}",
        redact_url(&startup.state.config.database_url),
        startup.state.config.storage.url,
        startup.state.config.workers
    );
    if let Some(token) = &startup.new_admin_token {
        println!(
            "\nFirst start: an admin API token was created. It is shown only now; keep it safe:\n\n    {token}\n"
        );
        println!("Send it as the header  Authorization: Bearer {token}\n");
    }
    app::run(listener, startup.state, shutdown_signal()).await
}

/// `kiln migrate`.
pub async fn migrate(config: Config) -> Result<()> {
    let store = crate::store::Store::connect(&config.database_url, 1).await?;
    store.migrate().await?;
    println!("migrations applied to {}", redact_url(&config.database_url));
    Ok(())
}

/// Hides a password in a database URL.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_passwords_are_hidden() {
        assert_eq!(
            super::redact_url("postgres://kiln:secret@db:5432/kiln"),
            "postgres://kiln:***@db:5432/kiln"
        );
        assert_eq!(
            super::redact_url("sqlite://./kiln-data/kiln.db"),
            "sqlite://./kiln-data/kiln.db"
        );
    }
}
