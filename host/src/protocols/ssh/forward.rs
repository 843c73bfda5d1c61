//! Local port forwards (`ssh -L`, `ssh -W`): a `direct-tcpip` channel the
//! client opens for the host to dial an endpoint.
//!
//! A target relays them only with `local_forwarding = true`; otherwise,
//! and whatever the target says when the endpoint is the gateway itself
//! (an end-to-end session inside the forward would hide everything from
//! the plugins), the channel is refused. An allowed forward is judged by
//! the target's plugins (`direct-tcpip` request), recorded as one event of
//! kind `direct-tcpip` whose text is `host:port`, and relayed byte for
//! byte until either side closes it or the session stops. A forward cannot
//! wait for an approver (the client's program waits on a socket with no
//! way to be told), so a plugin asking for approval refuses it. SSH has
//! no words for a refused channel beyond its code (`administratively
//! prohibited`): the reason is in the event.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelOpenFailure};
use tokio::sync::watch;

use super::channel::Counted;
use super::judge::Judge;
use super::record::{self, Commands, SessionEvents};
use super::upstream::Upstream;
use crate::policy::{QueryNote, SshRequest, Verdict};

/// The event kind (protocol detail) of a forward.
const KIND: &str = "direct-tcpip";

/// One forward a client asked for.
pub struct Forward {
    /// The endpoint's host, as the client sent it.
    pub host: String,
    /// The endpoint's port.
    pub port: u16,
    /// The client-side address the connection came from (informational).
    pub originator: (String, u32),
}

/// What a forward's relay uses of its session.
pub struct ForwardParts {
    /// The target allows local forwards.
    pub allowed: bool,
    /// The addresses the gateway listens on.
    pub gateway: Vec<SocketAddr>,
    /// The host's connection.
    pub upstream: Arc<Upstream>,
    /// The session's recorder.
    pub events: Arc<SessionEvents>,
    /// Its plugins' judge.
    pub judge: Arc<Judge>,
    /// Bytes carried.
    pub traffic: Arc<Counted>,
    /// Becomes `true` when the session is stopping.
    pub stopping: watch::Receiver<bool>,
}

/// Whether `host:port` may be the gateway itself: the port is one the
/// gateway listens on, and the host is a loopback or unspecified address,
/// `localhost`, a name or address of this machine, or a name this machine
/// cannot resolve (the host may resolve it to the gateway; the safe answer
/// is yes).
pub async fn is_gateway(host: &str, port: u16, gateway: &[SocketAddr]) -> bool {
    if !gateway.iter().any(|a| a.port() == port) {
        return false;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match tokio::net::lookup_host((host, port)).await {
            Ok(found) => found.map(|a| a.ip()).collect(),
            Err(_) => return true,
        },
    };
    ips.is_empty() || ips.into_iter().any(is_local)
}

/// Whether `ip` is an address of this machine (binding to it works).
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback()
        || ip.is_unspecified()
        || std::net::TcpListener::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Judges, records and relays one forward; answers the client's channel
/// open through `reply`.
pub async fn run(
    forward: Forward,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    parts: ForwardParts,
) {
    let mut commands = Commands::new(parts.events.clone());
    let Some(mut started) = commands.start(KIND, &format!("{}:{}", forward.host, forward.port))
    else {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        return;
    };
    let refusal = if !parts.allowed {
        Some("this target does not allow port forwarding (`local_forwarding`)".to_string())
    } else if is_gateway(&forward.host, forward.port, &parts.gateway).await {
        Some(
            "the endpoint is the gateway itself: a session inside the forward would pass unseen"
                .to_string(),
        )
    } else {
        None
    };
    if let Some(why) = refusal {
        record::write(Some(started.refused(Some("gateway"), &why))).await;
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        return;
    }
    let request = SshRequest::DirectTcpip {
        host: forward.host.clone(),
        port: forward.port,
    };
    let mut note = QueryNote::default();
    let verdict = parts.judge.decide(&request, &mut note);
    started.judged(&verdict, &note);
    let refused = match &verdict {
        Verdict::Allow => None,
        Verdict::Deny { reason } => Some(reason.clone()),
        Verdict::RequireApproval { reason } => Some(format!(
            "{reason} (a port forward cannot wait for approval, so it was refused)"
        )),
    };
    if let Some(why) = refused {
        record::write(Some(started.refused(None, &why))).await;
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        return;
    }
    if *parts.stopping.borrow() {
        record::write(Some(
            started.refused(Some("gateway"), "the session is stopping"),
        ))
        .await;
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        return;
    }
    let record = match started.commit().await {
        Ok(record) => record,
        Err((refused, _)) => {
            record::write(Some(refused)).await;
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        }
    };
    commands.running(record);
    let originator = (forward.originator.0.as_str(), forward.originator.1);
    let host = match parts
        .upstream
        .open_direct_tcpip(&forward.host, forward.port, originator)
        .await
    {
        Ok(host) => host,
        Err(e) => {
            tracing::info!(error = %e, endpoint = %format!("{}:{}", forward.host, forward.port), "the host could not open a forward");
            record::write(commands.host_refused()).await;
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        }
    };
    reply.accept().await;
    relay(channel, host, &parts).await;
    record::write(commands.forward_closed()).await;
}

/// Copies both ways until both sides are done or the session stops.
async fn relay(client: Channel<Msg>, host: Channel<russh::client::Msg>, parts: &ForwardParts) {
    let mut client = client.into_stream();
    let mut host = host.into_stream();
    let mut stopping = parts.stopping.clone();
    let copied = tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut host) => copied.ok(),
        _ = stopping.wait_for(|s| *s) => None,
    };
    if let Some((from_client, to_client)) = copied {
        use std::sync::atomic::Ordering;
        parts
            .traffic
            .from_client
            .fetch_add(from_client, Ordering::Relaxed);
        parts
            .traffic
            .to_client
            .fetch_add(to_client, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_gateways_own_ports_on_this_machine_are_the_gateway() {
        let own: Vec<SocketAddr> = vec!["0.0.0.0:2222".parse().unwrap()];
        assert!(is_gateway("127.0.0.1", 2222, &own).await);
        assert!(is_gateway("localhost", 2222, &own).await);
        assert!(is_gateway("LOCALHOST", 2222, &own).await);
        assert!(is_gateway("[::1]", 2222, &own).await);
        assert!(is_gateway("0.0.0.0", 2222, &own).await);
        assert!(is_gateway("127.1.2.3", 2222, &own).await);
        // A name nobody here can resolve may still be the gateway.
        assert!(is_gateway("no-such-host.invalid", 2222, &own).await);
        // Other ports, and addresses of other machines, are not.
        assert!(!is_gateway("127.0.0.1", 2223, &own).await);
        assert!(!is_gateway("192.0.2.10", 2222, &own).await);
    }
}
