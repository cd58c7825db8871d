//! Log lines: one per event, on standard error, coloured only on a terminal, each naming the
//! daemon that wrote it (`osd.3`, `mon.0`, `gateway`) once it knows its name, so that the logs
//! of a whole cluster can be merged and grepped.

use std::fmt;
use std::sync::OnceLock;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{DefaultFields, Format, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

static NAME: OnceLock<String> = OnceLock::new();

/// Names this process in every log line from now on (the first name given stays).
pub fn name(name: impl Into<String>) {
    let _ = NAME.set(name.into());
}

/// The default format with the daemon's name after the time stamp.
struct Named(Format<tracing_subscriber::fmt::format::Full, ()>);

impl<S, N> FormatEvent<S, N> for Named
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        SystemTime.format_time(&mut writer)?;
        match NAME.get() {
            Some(name) => write!(writer, " {name} ")?,
            None => writer.write_char(' ')?,
        }
        self.0.format_event(ctx, writer, event)
    }
}

/// Installs the logger: `RUST_LOG` filters (default `info`).
pub fn init() {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: daemons' logs go to files, read with grep and less.
        .with_ansi(ansi)
        .fmt_fields(DefaultFields::new())
        .event_format(Named(Format::default().without_time().with_ansi(ansi)))
        .init();
}
