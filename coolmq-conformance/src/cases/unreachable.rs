//! Failure case 1, the broker is unreachable: a typed, temporary `Unreachable` within the
//! connect timeout, whether the address refuses connections or answers nothing at all; with
//! several addresses, the first that answers is used.

use std::time::{Duration, Instant};

use coolmq_core::{Broker, Destination, ErrorKind, Message};

use super::case;
use crate::case::req::*;
use crate::{check, check_eq, Case, Ctx, Failed, FaultProxy, TestResult};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!(
            "unreachable",
            closed_port_is_unreachable_within_the_connect_timeout,
            [NETWORK]
        ),
        case!(
            "unreachable",
            silent_address_is_unreachable_within_the_connect_timeout,
            [NETWORK]
        ),
        case!(
            "unreachable",
            address_list_skips_dead_addresses_and_names_each_failure,
            [NETWORK]
        ),
    ]
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How much later than the connect timeout the error may come.
const SLACK: Duration = Duration::from_secs(1);

/// Connect to `addr` with a 2 s connect timeout; require `Unreachable`, temporary, in time.
async fn expect_unreachable(ctx: &Ctx, addr: std::net::SocketAddr, what: &str) -> TestResult {
    let mut config = ctx
        .config_at(addr)
        .ok_or_else(|| Failed("the backend's URL has no network address".into()))?;
    config.connect_timeout = CONNECT_TIMEOUT;
    let start = Instant::now();
    let r: coolmq_core::Result<Broker> = ctx.connect_with(config).await;
    let took = start.elapsed();
    let e = match r {
        Ok(b) => {
            let _ = b.close().await;
            return Err(Failed(format!("connecting to {what} succeeded")));
        }
        Err(e) => e,
    };
    check_eq!(
        e.kind(),
        ErrorKind::Unreachable,
        "error kind for {what} ({e})"
    );
    check!(e.is_temporary(), "Unreachable must be temporary: {e}");
    check!(
        took <= CONNECT_TIMEOUT + SLACK,
        "{what}: the error came after {took:?}, more than the connect timeout {CONNECT_TIMEOUT:?} + {SLACK:?}"
    );
    Ok(())
}

/// A port nothing listens on refuses the connection.
async fn closed_port_is_unreachable_within_the_connect_timeout(ctx: Ctx) -> TestResult {
    let closed = {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| Failed(e.to_string()))?;
        l.local_addr().map_err(|e| Failed(e.to_string()))?
    };
    expect_unreachable(&ctx, closed, "a closed port").await
}

/// An address that accepts the connection and then answers nothing (a black hole).
async fn silent_address_is_unreachable_within_the_connect_timeout(ctx: Ctx) -> TestResult {
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    let proxy = FaultProxy::start(upstream)
        .await
        .map_err(|e| Failed(e.to_string()))?;
    proxy.black_hole(true);
    expect_unreachable(&ctx, proxy.addr(), "a black-holed address").await
}

/// `failover:(closed port, black hole, broker)?randomize=false` connects to the broker after
/// at most one connect timeout per dead address and sends and receives through it; the same
/// list without the broker fails with a temporary `Unreachable` naming both dead addresses.
async fn address_list_skips_dead_addresses_and_names_each_failure(ctx: Ctx) -> TestResult {
    let closed = {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| Failed(e.to_string()))?;
        l.local_addr().map_err(|e| Failed(e.to_string()))?
    };
    let hole = FaultProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], 9)))
        .await
        .map_err(|e| Failed(e.to_string()))?;
    hole.black_hole(true);
    let at = |addr| {
        ctx.config_at(addr)
            .map(|c| c.url)
            .ok_or_else(|| Failed("the backend's URL has no network address".into()))
    };
    let (closed_url, hole_url) = (at(closed)?, at(hole.addr())?);
    let mut config = ctx.config().clone();
    config.connect_timeout = CONNECT_TIMEOUT;
    let broker_urls = ctx.config().addresses()?.urls().join(",");
    config.url = format!("failover:({closed_url},{hole_url},{broker_urls})?randomize=false");
    let start = Instant::now();
    let broker = ctx.connect_with(config.clone()).await?;
    let took = start.elapsed();
    check!(
        took <= CONNECT_TIMEOUT * 2 + SLACK,
        "connecting past two dead addresses took {took:?}, more than 2 connect timeouts + {SLACK:?}"
    );
    let q = ctx.queue("address-list").await?;
    let p = broker.publisher().await?;
    p.send(
        &Destination::queue(&q),
        Message::new_with_id("via-list", "x"),
    )
    .await?;
    let mut c = broker.consumer(&q).await?;
    let d = ctx.recv(&mut c).await?;
    check_eq!(
        d.message().id.as_str(),
        "via-list",
        "the message sent through the list"
    );
    d.ack().await?;
    let _ = broker.close().await;

    config.url = format!("failover:({closed_url},{hole_url})?randomize=false");
    let start = Instant::now();
    let e = match ctx.connect_with(config).await {
        Ok(b) => {
            let _ = b.close().await;
            return Err(Failed("a list of dead addresses connected".into()));
        }
        Err(e) => e,
    };
    let took = start.elapsed();
    check_eq!(e.kind(), ErrorKind::Unreachable, "error kind ({e})");
    check!(e.is_temporary(), "Unreachable must be temporary: {e}");
    let text = e.to_string();
    for port in [closed.port(), hole.addr().port()] {
        check!(
            text.contains(&format!(":{port}")),
            "the error names the address with port {port}: {text}"
        );
    }
    check!(
        took <= CONNECT_TIMEOUT * 2 + SLACK,
        "the error came after {took:?}, more than 2 connect timeouts + {SLACK:?}"
    );
    Ok(())
}
