//! Logging setup.

use crate::config::{LogFormat, LogSection};
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber. `RUST_LOG` wins over the config.
pub fn init(log: &LogSection) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v)?,
        _ => EnvFilter::try_new(&log.level)
            .map_err(|e| anyhow::anyhow!("config key `log.level`: {e}"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
