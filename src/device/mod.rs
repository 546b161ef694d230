//! PID 1 (outpost-init).

pub mod api;
pub mod board;
pub mod cmdline;
pub mod grow;
#[cfg(feature = "sim")]
pub mod host_mode;
pub mod hostname;
pub mod install;
pub mod kmsg;
pub mod log;
pub mod metrics;
pub mod modules;
pub mod mounts;
pub mod net;
pub mod netinfo;
pub mod persistlog;
pub mod power;
pub mod reaper;
pub mod runtime;
pub mod serial;
pub mod slots;
pub mod status;
pub mod sys;
pub mod upgrade;
pub mod upload;
pub mod watchdog;
