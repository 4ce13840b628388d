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

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is
/// called (inside a Tokio runtime), not when the future is first polled, so
/// a signal that arrives in between stops the process cleanly.
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static>
{
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
