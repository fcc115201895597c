//! Failure case 1, the broker is unreachable: a typed, temporary `Unreachable` within the
//! connect timeout, whether the address refuses connections or answers nothing at all.

use std::time::{Duration, Instant};

use coolmq_core::{Broker, ErrorKind};

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
