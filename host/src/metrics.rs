//! Process-wide counters for `/metrics` (Prometheus text format): sessions,
//! queries by verdict and deciding plugin, plugin call latency, token
//! failures by reason, bytes relayed, pending approvals and audit store
//! write latency.
//!
//! Hot-path updates are atomic increments; labelled counters that only
//! change on refusals or failures sit behind a mutex. The counters are
//! process-wide: several gateways in one process (tests) share them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Upper bounds of histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// A latency histogram with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Adds one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, n) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// The gateway's counters.
#[derive(Default)]
pub struct Metrics {
    /// Sessions relaying now.
    pub sessions_active: AtomicI64,
    /// Sessions started since the process started.
    pub sessions_total: AtomicU64,
    /// Statements allowed.
    pub queries_allowed: AtomicU64,
    /// Statements refused or held, by (verdict, plugin).
    queries_decided: Mutex<BTreeMap<(String, String), u64>>,
    /// Token validation failures by reason.
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Bytes read from clients.
    pub bytes_from_clients: AtomicU64,
    /// Bytes relayed to clients.
    pub bytes_to_clients: AtomicU64,
    /// Approval requests waiting for a decision.
    pub approvals_pending: AtomicI64,
    /// Approval webhook notifications dropped because the queue was full.
    webhooks_dropped: AtomicU64,
    /// Audit store commits.
    pub store_writes: Histogram,
    /// Plugin call latency, by plugin name.
    plugin_calls: Mutex<BTreeMap<String, Arc<Histogram>>>,
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Counts a statement's verdict (`allow`, `deny`, `require-approval`)
    /// and the plugin that decided it.
    pub fn query(&self, verdict: &str, plugin: Option<&str>) {
        if verdict == "allow" {
            self.queries_allowed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *lock(&self.queries_decided)
            .entry((verdict.to_string(), plugin.unwrap_or("").to_string()))
            .or_default() += 1;
    }

    /// Counts an approval webhook notification dropped (queue full).
    pub fn webhook_dropped(&self) {
        self.webhooks_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused token.
    pub fn auth_failure(&self, reason: &'static str) {
        *lock(&self.auth_failures).entry(reason).or_default() += 1;
    }

    /// The latency histogram of plugin `name` (kept by the plugin so calls
    /// need no lookup).
    pub fn plugin_histogram(&self, name: &str) -> Arc<Histogram> {
        lock(&self.plugin_calls)
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter_head = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        };
        gauge(
            &mut out,
            "portcullis_sessions_active",
            "Sessions relaying now.",
            self.sessions_active.load(Ordering::Relaxed),
        );
        counter_head(&mut out, "portcullis_sessions_total", "Sessions started.");
        let _ = writeln!(
            out,
            "portcullis_sessions_total {}",
            self.sessions_total.load(Ordering::Relaxed)
        );
        counter_head(
            &mut out,
            "portcullis_queries_total",
            "Statements by verdict and the plugin that decided.",
        );
        let _ = writeln!(
            out,
            "portcullis_queries_total{{verdict=\"allow\",plugin=\"\"}} {}",
            self.queries_allowed.load(Ordering::Relaxed)
        );
        for ((verdict, plugin), n) in lock(&self.queries_decided).iter() {
            let _ = writeln!(
                out,
                "portcullis_queries_total{{verdict=\"{}\",plugin=\"{}\"}} {n}",
                label(verdict),
                label(plugin)
            );
        }
        counter_head(
            &mut out,
            "portcullis_auth_failures_total",
            "Tokens refused, by reason.",
        );
        for (reason, n) in lock(&self.auth_failures).iter() {
            let _ = writeln!(
                out,
                "portcullis_auth_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        counter_head(
            &mut out,
            "portcullis_bytes_total",
            "Bytes relayed, by direction.",
        );
        let _ = writeln!(
            out,
            "portcullis_bytes_total{{direction=\"from_client\"}} {}\nportcullis_bytes_total{{direction=\"to_client\"}} {}",
            self.bytes_from_clients.load(Ordering::Relaxed),
            self.bytes_to_clients.load(Ordering::Relaxed)
        );
        gauge(
            &mut out,
            "portcullis_approvals_pending",
            "Approval requests waiting for a decision.",
            self.approvals_pending.load(Ordering::Relaxed),
        );
        counter_head(
            &mut out,
            "portcullis_approval_webhooks_dropped_total",
            "Approval webhook notifications dropped because the delivery queue was full.",
        );
        let _ = writeln!(
            out,
            "portcullis_approval_webhooks_dropped_total {}",
            self.webhooks_dropped.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_plugin_call_seconds Plugin call latency.\n# TYPE portcullis_plugin_call_seconds histogram"
        );
        for (plugin, h) in lock(&self.plugin_calls).iter() {
            h.render(
                &mut out,
                "portcullis_plugin_call_seconds",
                &format!("plugin=\"{}\"", label(plugin)),
            );
        }
        let _ = writeln!(
            out,
            "# HELP portcullis_store_write_seconds Audit store commit latency.\n# TYPE portcullis_store_write_seconds histogram"
        );
        self.store_writes
            .render(&mut out, "portcullis_store_write_seconds", "");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.query("allow", None);
        m.query("deny", Some("block"));
        m.auth_failure("expired");
        m.plugin_histogram("mask").observe(Duration::from_micros(3));
        m.store_writes.observe(Duration::from_millis(2));
        let text = m.render();
        assert!(
            text.contains("portcullis_queries_total{verdict=\"deny\",plugin=\"block\"} 1"),
            "{text}"
        );
        assert!(text.contains("portcullis_auth_failures_total{reason=\"expired\"} 1"));
        assert!(text
            .contains("portcullis_plugin_call_seconds_bucket{plugin=\"mask\",le=\"0.00001\"} 1"));
        assert!(text.contains("portcullis_store_write_seconds_count 1"));
        assert!(text.contains("portcullis_store_write_seconds_bucket{le=\"0.005\"} 1"));
    }
}
