//! Where plugin code runs.
//!
//! Calls on the data path run *inline*, on the thread of the session that
//! raised the event (a call is bounded by the plugin's deadline, so it is
//! never a long block): no hand-off to another thread, which on a busy
//! gateway costs more than the call itself. [`inline`] catches a panic in
//! host code during the call — notably wasmtime-wasi's `block_on`, which
//! refuses to run on a tokio worker when a plugin writes to stdout or stderr
//! (as a panicking Rust plugin does) — and turns it into a failure of that
//! call, which the plugin's failure policy then handles like a trap.
//!
//! Loading (compiling a component can take seconds) runs on the [`Executor`]'s
//! plain threads so it never stalls the async runtime.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, Once};

thread_local! {
    /// Set while this thread runs plugin code through [`inline`].
    static IN_PLUGIN_CALL: Cell<bool> = const { Cell::new(false) };
}

/// Installs (once) a panic hook that keeps panics caught by [`inline`] out of
/// stderr (they are reported as call failures instead); other panics are
/// printed as before.
fn quiet_plugin_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_PLUGIN_CALL.with(Cell::get) {
                tracing::debug!(panic = %info, "host panic during a plugin call");
            } else {
                previous(info);
            }
        }));
    });
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Runs plugin code `f` on this thread; `Err` (with the panic's text) if
/// host code panicked during it.
pub fn inline<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    quiet_plugin_panics();
    let outer = IN_PLUGIN_CALL.with(|c| c.replace(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    IN_PLUGIN_CALL.with(|c| c.set(outer));
    r.map_err(|p| {
        let text = panic_text(p);
        if text.contains("Cannot start a runtime from within a runtime") {
            // wasmtime-wasi's stdio refused to block the session's thread.
            "it wrote to stdout or stderr, which plugins do not have (a panicking Rust plugin does this just before it traps); log with the SDK's `log`".to_string()
        } else {
            format!("host error while calling the plugin: {text}")
        }
    })
}

type Job = Box<dyn FnOnce() + Send>;

/// A small pool of plain threads for loading plugins.
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
            let r = catch_unwind(AssertUnwindSafe(f)).map_err(panic_text);
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
