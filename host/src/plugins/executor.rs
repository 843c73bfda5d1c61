//! Threads that run plugin code outside the async runtime.
//!
//! wasmtime-wasi's synchronous bindings drive their (async) stream and poll
//! implementations with `block_on`, which panics on a tokio worker thread.
//! A plugin that writes to stderr — as every Rust panic does — would then
//! take its session down instead of failing one event. So every call into a
//! plugin runs on one of these plain threads; the calling task waits for it
//! (a call is bounded by the plugin's deadline).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// A small pool of plain threads for plugin calls.
pub struct Executor {
    jobs: Sender<Job>,
}

impl Executor {
    /// Starts `threads` worker threads.
    pub fn new(threads: usize) -> std::io::Result<Arc<Self>> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let rx: Arc<Mutex<Receiver<Job>>> = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("portcullis-plugin-{i}"))
                .spawn(move || loop {
                    let job = {
                        let Ok(guard) = rx.lock() else { return };
                        match guard.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        }
                    };
                    job();
                })?;
        }
        Ok(Arc::new(Self { jobs }))
    }

    /// Runs `f` on a plugin thread and waits for its result; `Err` if it
    /// panicked (in host code) or the pool is gone.
    pub fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, String> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let r = catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
                p.downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into())
            });
            let _ = tx.send(r);
        });
        self.jobs
            .send(job)
            .map_err(|_| "the plugin threads have stopped".to_string())?;
        rx.recv()
            .map_err(|_| "the plugin thread did not answer".to_string())?
            .map_err(|p| format!("host error while calling the plugin: {p}"))
    }
}
