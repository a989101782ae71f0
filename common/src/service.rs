//! What the agent and the collector do alike as processes (feature `service`): log to standard
//! error, stop on SIGTERM or Ctrl-C, print a command's output. Nothing of the usage math depends
//! on it.

/// Logs to standard error with `filter` (RUST_LOG syntax): colours only on a terminal, and no
/// timestamps under journald, which stamps every line itself.
pub fn init_logging(filter: &str) -> Result<(), tracing_subscriber::filter::ParseError> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter)?)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init()
    } else {
        builder.init()
    }
    Ok(())
}

/// Completes on SIGTERM or SIGINT. The handlers are installed by this call (inside a runtime),
/// not when the future is first polled: a signal that arrives while the service is still
/// starting stops it in order instead of killing it. (If they cannot be installed, the future
/// never completes and the signals keep their default action.)
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = signal(SignalKind::terminate()).and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
    async move {
        match handlers {
            Ok((mut term, mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = interrupt.recv() => {},
                }
            }
            Err(_) => std::future::pending().await,
        }
    }
}

/// Prints a command's output to standard output, like `print!`; a reader that went away
/// (`tally-collector site list | head`) ends the process quietly, as Unix tools do, where
/// `print!` would panic.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::service::write_out(format_args!($($arg)*))
    };
}

/// [`out!`] with a newline.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::service::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[doc(hidden)]
pub fn write_out(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "cannot write to standard output: {e}");
            std::process::exit(1)
        }
    }
}

/// Parses the command line as clap does, but a mistyped command suggests the closest harmless
/// one first: clap would offer `restore` for `repot` before `report`. `risky`: the commands that
/// change or delete things.
pub fn parse_command_line<T: clap::Parser>(risky: &[&str]) -> T {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let error = match T::try_parse() {
        Ok(parsed) => return parsed,
        Err(error) => error,
    };
    let given = match error.get(ContextKind::InvalidSubcommand) {
        Some(ContextValue::String(given)) if error.kind() == ErrorKind::InvalidSubcommand => given.clone(),
        _ => error.exit(),
    };
    let offered = match error.get(ContextKind::SuggestedSubcommand) {
        Some(ContextValue::Strings(names)) => names.clone(),
        _ => Vec::new(),
    };
    let ordered = crate::suggest::similar(&given, offered.iter().map(String::as_str), risky);
    let hint = match ordered.as_slice() {
        [] => String::new(),
        [first] => format!("\n\n  did you mean '{first}'?"),
        [first, rest @ ..] => format!("\n\n  did you mean '{first}'? (or: {})", rest.join(", ")),
    };
    eprintln!("error: unrecognized command '{given}'{hint}\n\nFor more information, try '--help'.");
    std::process::exit(2);
}
