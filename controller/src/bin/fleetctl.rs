//! `fleetctl`: parse arguments, call the API, print.

use clap::Parser;

fn main() {
    let cli = fleet_controller::ctl::Cli::parse();
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("fleetctl: a TLS crypto provider was already installed");
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleetctl: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    match rt.block_on(fleet_controller::ctl::run(cli)) {
        Ok(out) => print!("{out}"),
        Err(e) => {
            eprintln!("fleetctl: {e}");
            std::process::exit(1);
        }
    }
}
