//! The command line's exit codes: a script tells a bad invocation, an unreachable broker, a
//! broker's refusal, a failed conformance case and an empty queue apart without reading text.

use std::process::ExitCode;

use coolmq::{Error, ErrorKind};

/// Why the command line stopped. Each has its own exit code (`coolmq --help` lists them).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 1: anything else (an I/O error writing the output, an unexpected broker answer).
    Failure,
    /// 2: bad arguments, URL or configuration (clap uses 2 for its own usage errors too).
    Usage,
    /// 3: the broker could not be reached or refused the login or TLS handshake, the
    /// connection was lost, or an answer did not come in time.
    Connection,
    /// 4: the broker refused the operation: a missing queue, no permission, a nacked,
    /// rejected, unroutable or oversize message, publishing blocked by an alarm.
    Refused,
    /// 5: at least one conformance case failed.
    ConformanceFailed,
    /// 6: nothing to receive: no message arrived within `--timeout`.
    NothingReceived,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::Connection => 3,
            Exit::Refused => 4,
            Exit::ConformanceFailed => 5,
            Exit::NothingReceived => 6,
        }
    }

    /// What a coolmq error means for the exit code.
    pub fn of(error: &Error) -> Exit {
        match error.kind() {
            ErrorKind::ConfigInvalid | ErrorKind::UnknownScheme | ErrorKind::FeatureDisabled => {
                Exit::Usage
            }
            ErrorKind::Unreachable
            | ErrorKind::AuthenticationFailed
            | ErrorKind::Tls
            | ErrorKind::ConnectionLost
            | ErrorKind::Timeout
            | ErrorKind::Closed => Exit::Connection,
            ErrorKind::NotFound
            | ErrorKind::PermissionDenied
            | ErrorKind::Nacked
            | ErrorKind::Rejected
            | ErrorKind::Unroutable
            | ErrorKind::MessageTooLarge
            | ErrorKind::Blocked
            | ErrorKind::Unsupported
            | ErrorKind::TransactionRolledBack => Exit::Refused,
            _ => Exit::Failure,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// The table `coolmq --help` ends with.
pub const HELP: &str = "\
Exit codes:
  0  success
  1  any other failure
  2  usage: bad arguments, URL or configuration
  3  connection: broker unreachable, login or TLS refused, connection lost, timeout
  4  refused by the broker: missing queue, permission, nack, reject, unroutable, too large
  5  conformance: at least one case failed
  6  nothing received within --timeout

Colours only on a terminal, never with NO_COLOR set. Logs: COOLMQ_LOG=debug.";
