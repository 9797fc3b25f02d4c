//! `with-postgres COMMAND [ARGS...]`: start a throwaway PostgreSQL
//! ([`berth_tests::postgres::PgServer`]), run the command with
//! `BERTH_TEST_POSTGRES` set to the server's URL (so the registry's tests
//! build their stores there), stop the server, and exit as the command
//! did. `./scripts/test` runs the registry's test suite a second time
//! this way: the metadata conformance run on PostgreSQL.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: with-postgres COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    let pg = berth_tests::postgres::PgServer::start();
    let status = Command::new(&program)
        .args(args)
        .env("BERTH_TEST_POSTGRES", pg.url("postgres"))
        .status();
    drop(pg);
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => ExitCode::from(s.code().unwrap_or(1).clamp(1, 255) as u8),
        Err(e) => {
            eprintln!("with-postgres: cannot run {program}: {e}");
            ExitCode::from(127)
        }
    }
}
