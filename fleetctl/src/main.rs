//! `fleetctl`: parse arguments, run the command, print, exit status.

use std::process::ExitCode;

use clap::Parser;
use fleetctl::cli::Cli;
use fleetctl::render::render;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleetctl: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(fleetctl::commands::run(cli)) {
        Ok(done) => {
            if let Some(note) = done.report.note() {
                eprintln!("{note}");
            }
            print!("{}", render(done.report.as_ref(), done.output));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fleetctl: {e}");
            ExitCode::FAILURE
        }
    }
}
