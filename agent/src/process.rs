//! Process plumbing shared by the binaries built on this library
//! (`fleet-agent`, `fleet-sim`): logging to stderr and the shutdown signal.

/// Log to stderr with the filter from `env_var` (else `default`); colours
/// only on a terminal and without `NO_COLOR`.
pub fn init_tracing(env_var: &str, default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env(env_var).unwrap_or_else(|_| default.into()),
        )
        .with_ansi(
            std::env::var_os("NO_COLOR").is_none()
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Linux");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
