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
use crate::policy::{QueryNote, SshRequest};

/// The event kind (protocol detail) of a forward.
const KIND: &str = "direct-tcpip";

/// Forwards a session may have open (or being judged) at once.
pub const MAX_FORWARDS: usize = 64;

/// One of a session's [`MAX_FORWARDS`], held while a forward lives.
struct Slot(Arc<std::sync::atomic::AtomicUsize>);

impl Slot {
    fn take(open: &Arc<std::sync::atomic::AtomicUsize>) -> Option<Self> {
        use std::sync::atomic::Ordering;
        let taken = open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_FORWARDS).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| Self(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

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
    /// The addresses the gateway listens on; `None` while it is starting
    /// (every forward is refused until they are known).
    pub gateway: Option<Vec<SocketAddr>>,
    /// Forwards open in the session (at most [`MAX_FORWARDS`]).
    pub open: Arc<std::sync::atomic::AtomicUsize>,
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
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, 0)],
        Err(_) => {
            // A name (or a zoned IPv6 address) as this machine resolves it;
            // one that does not resolve in time may be the gateway.
            let lookup = tokio::net::lookup_host((host, port));
            match tokio::time::timeout(DNS_TIMEOUT, lookup).await {
                Ok(Ok(found)) => found.collect(),
                _ => return true,
            }
        }
    };
    addresses.is_empty() || addresses.into_iter().any(is_local)
}

/// How long the gateway waits for its resolver to read a forward's host.
const DNS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether `address` is one of this machine's (binding to it works; an
/// IPv6 zone is kept, and an IPv4 address mapped into IPv6 is read as
/// the IPv4 address).
fn is_local(address: SocketAddr) -> bool {
    let ip = address.ip().to_canonical();
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    let probe = match (address, ip) {
        (SocketAddr::V6(v6), IpAddr::V6(_)) => {
            SocketAddr::V6(std::net::SocketAddrV6::new(*v6.ip(), 0, 0, v6.scope_id()))
        }
        _ => SocketAddr::new(ip, 0),
    };
    std::net::TcpListener::bind(probe).is_ok()
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
    let slot = Slot::take(&parts.open);
    let refusal = if !parts.allowed {
        Some("this target does not allow port forwarding (`local_forwarding`)".to_string())
    } else if slot.is_none() {
        Some(format!(
            "the session has {MAX_FORWARDS} forwards open, the most a session may"
        ))
    } else if parts.gateway.is_none() {
        Some("the gateway is still starting".to_string())
    } else if is_gateway(
        &forward.host,
        forward.port,
        parts.gateway.as_deref().unwrap_or_default(),
    )
    .await
    {
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
    let refused = super::judge::refusal_now(
        &verdict,
        "a port forward cannot wait for approval, so it was refused",
    );
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
    let ended = relay(channel, host, &parts).await;
    record::write(commands.forward_closed(ended)).await;
}

/// Copies both ways, counting as it goes, until both sides are done or
/// the session stops; why it ended early, if it did.
async fn relay(
    client: Channel<Msg>,
    host: Channel<russh::client::Msg>,
    parts: &ForwardParts,
) -> Option<String> {
    let (mut client_rd, mut client_wr) = tokio::io::split(client.into_stream());
    let (mut host_rd, mut host_wr) = tokio::io::split(host.into_stream());
    let traffic = &parts.traffic;
    let up = copy_counted(&mut client_rd, &mut host_wr, &traffic.from_client);
    let down = copy_counted(&mut host_rd, &mut client_wr, &traffic.to_client);
    let mut stopping = parts.stopping.clone();
    tokio::select! {
        (up, down) = async { tokio::join!(up, down) } => match up.and(down) {
            Ok(()) => None,
            Err(e) => Some(format!("the forward failed: {e}")),
        },
        _ = stopping.wait_for(|s| *s) => Some("the session stopped".to_string()),
    }
}

/// Copies `from` to `to` until the end of data, then ends `to`; each
/// chunk is counted in `counted` as it is written.
async fn copy_counted<R, W>(
    from: &mut R,
    to: &mut W,
    counted: &std::sync::atomic::AtomicU64,
) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        counted.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
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
        assert!(is_gateway("::ffff:127.0.0.1", 2222, &own).await);
        assert!(is_gateway("localhost.", 2222, &own).await);
        // A name nobody here can resolve may still be the gateway.
        assert!(is_gateway("no-such-host.invalid", 2222, &own).await);
        // Other ports, and addresses of other machines, are not.
        assert!(!is_gateway("127.0.0.1", 2223, &own).await);
        assert!(!is_gateway("192.0.2.10", 2222, &own).await);
    }
}
