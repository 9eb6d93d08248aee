//! The server-side scripts. Each is loaded once and then invoked by hash (EVALSHA); the store
//! loads them again when the server answers NOSCRIPT (after a restart or SCRIPT FLUSH).

use std::sync::LazyLock;

use redis::Script;

macro_rules! session_script {
    ($($file:literal),+) => {
        concat!(include_str!("lua/prelude.lua"), $(include_str!($file)),+)
    };
}

const SOURCES: [&str; 6] = [
    session_script!("lua/load.lua"),
    session_script!("lua/apply_fn.lua", "lua/apply.lua"),
    session_script!("lua/create.lua"),
    session_script!("lua/apply_fn.lua", "lua/cycle.lua"),
    session_script!("lua/destroy.lua"),
    session_script!("lua/index.lua"),
];

static SCRIPTS: LazyLock<[Script; 6]> = LazyLock::new(|| SOURCES.map(Script::new));

/// The script names, in `SOURCES` order.
#[derive(Clone, Copy)]
pub(crate) enum Lua {
    Load,
    Apply,
    Create,
    Cycle,
    Destroy,
    Index,
}

impl Lua {
    pub(crate) fn hash(self) -> &'static str {
        SCRIPTS[self as usize].get_hash()
    }
}

/// Every script's source, for `SCRIPT LOAD`.
pub(crate) fn sources() -> &'static [&'static str] {
    &SOURCES
}
