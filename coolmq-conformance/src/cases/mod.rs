//! The cases, one module per topic.

use crate::Case;

mod capability;
mod confirm;
mod consume;
mod load;
mod poison;
mod redelivery;
mod send;
mod stall;
mod topic;
mod topology;
mod transaction;
mod typed;
mod unreachable;
mod worker;

/// Register an `async fn(Ctx) -> TestResult` as a case: `case!("group", my_case, [CONFIRMS])`
/// (requirements from [`crate::req`]). Third parties give theirs to
/// [`crate::Target::with_cases`].
#[macro_export]
macro_rules! case {
    ($group:literal, $f:ident, [$($req:expr),* $(,)?]) => {
        $crate::Case {
            group: $group,
            name: stringify!($f),
            requires: &[$($req),*],
            run: |ctx| Box::pin($f(ctx)),
        }
    };
}
pub(crate) use crate::case;

pub(crate) fn all() -> Vec<Case> {
    [
        send::cases(),
        confirm::cases(),
        transaction::cases(),
        consume::cases(),
        topic::cases(),
        topology::cases(),
        redelivery::cases(),
        worker::cases(),
        poison::cases(),
        unreachable::cases(),
        stall::cases(),
        capability::cases(),
        load::cases(),
        typed::cases(),
    ]
    .concat()
}
