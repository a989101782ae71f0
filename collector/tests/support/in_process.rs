//! The collector's HTTP API and console served inside the test process, for the tests that only
//! speak HTTP to it: no child process, ready once its listener is bound (`tally_collector::serve`
//! on a listener of the test's, mini-redis's habit). Each runs on a thread of its own with a
//! current-thread runtime and its collector's clock (`clock::set_thread_offset`). A test that
//! needs what only `serve` does (the ingest, the engine's notifications, signals, a crash, its
//! log, a process's own `/metrics`) starts the real binary with `Collector::serve` instead.

use std::sync::Arc;

use tally_collector::config::Config;
use tally_collector::store::postgres::PgStore;
use tally_collector::store::sqlite::SqliteStore;
use tokio::sync::oneshot;

use super::Collector;

/// A collector served in this process; dropping it stops it and waits until it has.
pub struct InProcess {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Serves `c`'s HTTP API and console in this process, on `c`'s HTTP address: the guard, and
/// that address.
pub fn serve(c: &Collector) -> (InProcess, String) {
    let config = Config::load(Some(&c.config())).unwrap_or_else(|e| panic!("{e}"));
    let address = c.http_address();
    let listener = std::net::TcpListener::bind(address).unwrap_or_else(|e| panic!("binding {address}: {e}"));
    listener.set_nonblocking(true).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let offset = c.in_process_offset();
    let thread = std::thread::spawn(move || {
        tally_collector::clock::set_thread_offset(offset);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let shutdown = async move {
                let _ = stopped.await;
            };
            let served = match &config.database_url {
                Some(url) => {
                    let store = Arc::new(PgStore::open(url).await.unwrap());
                    tally_collector::serve(listener, tally_collector::http_router(store, &config), shutdown).await
                }
                None => {
                    let store = Arc::new(SqliteStore::open(&config.database()).await.unwrap());
                    tally_collector::serve(listener, tally_collector::http_router(store, &config), shutdown).await
                }
            };
            served.unwrap();
        });
    });
    (InProcess { stop: Some(stop), thread: Some(thread) }, address.to_string())
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the collector's thread fails the test that served it (unless it is
            // failing already).
            if thread.join().is_err() && !std::thread::panicking() {
                panic!("the in-process collector panicked");
            }
        }
    }
}
