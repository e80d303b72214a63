//! Process CPU time (getrusage) and wall time over a measured window.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::args::Args;

/// A window's start: wall clock and the process's CPU times.
pub struct Usage {
    wall: Instant,
    user: Duration,
    system: Duration,
}

/// What a window measured.
pub struct Measured {
    ops: u64,
    bytes: u64,
    rows: u64,
    seconds: f64,
    user: Duration,
    system: Duration,
}

impl Usage {
    pub fn now() -> Usage {
        let (user, system) = cpu_times();
        Usage {
            wall: Instant::now(),
            user,
            system,
        }
    }

    pub fn done(self, ops: u64, bytes: u64, rows: u64) -> Measured {
        let seconds = self.wall.elapsed().as_secs_f64();
        let (user, system) = cpu_times();
        Measured {
            ops,
            bytes,
            rows,
            seconds,
            user: user.saturating_sub(self.user),
            system: system.saturating_sub(self.system),
        }
    }
}

impl Measured {
    /// The driver's JSON line (interop/bench/README.md).
    pub fn line(&self, client: &str, transport: &str, args: &Args) -> Value {
        json!({
            "client": client,
            "transport": transport,
            "workload": args.workload.name(),
            "inflight": args.inflight,
            "chunk": args.chunk,
            "ops": self.ops,
            "bytes": self.bytes,
            "rows": self.rows,
            "seconds": self.seconds,
            "cpu_user_s": self.user.as_secs_f64(),
            "cpu_sys_s": self.system.as_secs_f64(),
        })
    }
}

/// The process's user and system CPU time so far.
fn cpu_times() -> (Duration, Duration) {
    // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    (time(usage.ru_utime), time(usage.ru_stime))
}
