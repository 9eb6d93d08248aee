//! The `cloakroom` binary: the reference app (`serve`, the default) and operator commands.
// Clippy's layout queries over `main`'s future (every command's, the store set-ups included)
// pass the default depth of 128.
#![recursion_limit = "256"]

use clap::Parser;
use cloakroom_app::config::{Cli, Command, ServeArgs};
use cloakroom_app::{ops, serve};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cloakroom_app::logs::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(Command::Healthcheck { port }) = &cli.command {
        return match runtime.block_on(cloakroom_app::healthcheck::probe(*port)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("unhealthy: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Check(store)) = &cli.command {
        return match runtime.block_on(ops::check(store)) {
            Ok((text, ready)) => {
                print!("{text}");
                if ready {
                    std::process::ExitCode::SUCCESS
                } else {
                    std::process::ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let outcome: Result<String, Box<dyn std::error::Error>> = runtime.block_on(async {
        match cli.command {
            None => match ServeArgs::from_env() {
                Ok(args) => serve::run(args)
                    .await
                    .map(|()| String::new())
                    .map_err(Into::into),
                Err(e) => e.exit(),
            },
            Some(Command::Serve(args)) => serve::run(*args)
                .await
                .map(|()| String::new())
                .map_err(Into::into),
            Some(Command::Stats {
                store,
                watch: Some(every),
                count,
                ..
            }) => ops::watch(&store, every, count)
                .await
                .map(|()| String::new())
                .map_err(Into::into),
            Some(Command::Stats { store, json, .. }) => {
                ops::stats(&store, json).await.map_err(Into::into)
            }
            Some(Command::Sizing {
                store,
                sessions,
                avg_bytes,
            }) => ops::sizing(&store, sessions, avg_bytes)
                .await
                .map_err(Into::into),
            // Handled above: their exit codes say whether the set-up is ready or healthy.
            Some(Command::Check(_) | Command::Healthcheck { .. }) => Ok(String::new()),
            Some(Command::List { store, user }) => {
                ops::list(&store, &user).await.map_err(Into::into)
            }
            Some(Command::Revoke { store, user, key }) => {
                ops::revoke(&store, user.as_deref(), key.as_deref())
                    .await
                    .map_err(Into::into)
            }
            Some(Command::Migrate {
                from,
                to,
                state,
                store,
            }) => {
                let with = |url: &str| cloakroom_app::config::StoreArgs {
                    store: Some(url.to_owned()),
                    ..store.clone()
                };
                ops::migrate(&with(&from), &with(&to), state.as_deref())
                    .await
                    .map_err(Into::into)
            }
            Some(Command::Secret) => cloakroom::generate_secret()
                .map(|s| format!("{s}\n"))
                .map_err(Into::into),
        }
    });
    match outcome {
        Ok(text) => {
            print!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
