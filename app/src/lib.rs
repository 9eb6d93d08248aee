//! The Cloakroom reference app and operator CLI.
//!
//! The app is the scenario of the managed-Redis session tutorials (log in, profile, log out,
//! visit counters, flash messages, form state, a todo list), done right: see `web` for the
//! routes and `serve` for how the binary puts it together.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backend;
pub mod config;
pub mod healthcheck;
pub mod identity;
pub mod import;
pub mod logs;
pub mod ops;
pub mod secret;
pub mod serve;
pub mod todos;
pub mod web;
