//! Logging: `tracing` to stdout, JSON or human-readable by `log.format`,
//! filtered by `log.level`. Each request's span carries its `request_id`, so
//! every line logged while serving it names the request.

use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber (a second call is a no-op) and a panic hook
/// that logs panics as one log line, in the current request's span, instead
/// of printing to stderr.
pub fn init(settings: &LogSettings) {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(panic = %info.payload_as_str().unwrap_or("non-string payload"), %location, "panic");
    }));
    let filter = EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _already_installed = match settings.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer()).try_init(),
    };
}
