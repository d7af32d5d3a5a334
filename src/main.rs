//! The binary: parse flags, run, map the outcome to an exit status.
//! 0: done (or --help); 1: a runtime error, printed once with its causes;
//! 2: bad flags or values.

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let args = match sockdiag_exporter::cli::parse(&argv) {
        Ok(args) => args,
        Err(exit) if exit.status == 0 => {
            let _ = sockdiag_exporter::print_stdout(&format!("{}\n", exit.output));
            return ExitCode::SUCCESS;
        }
        Err(exit) => {
            eprintln!("{}", exit.output);
            return ExitCode::from(exit.status);
        }
    };
    match sockdiag_exporter::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "sockdiag_exporter: {}",
                sockdiag_exporter::error_chain(&*error)
            );
            ExitCode::FAILURE
        }
    }
}
