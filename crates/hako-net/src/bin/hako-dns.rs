//! The resolver for user networks: `hako-dns <dir>` serves the networks
//! written under `<dir>` (see `hako_net::dns`) until none is left. The
//! engine starts it through `hako_net::dns::ensure_running`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: hako-dns <state dir>");
        return ExitCode::from(2);
    };
    match hako_net::dns::serve(&PathBuf::from(dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hako-dns: {e}");
            ExitCode::FAILURE
        }
    }
}
