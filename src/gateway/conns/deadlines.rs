//! Deadlines: when each connection next needs the loop (a pure function of
//! its stage, its traffic and the core's deadline), the shared timer wheel,
//! and what a due timer does.

use super::Conns;
use crate::gateway::app::App;
use crate::gateway::conn::Stage;
use crate::gateway::endpoint::ENDPOINT_BASE;
use crate::gateway::timer::Entry;
use crate::proto::client_id::client_id_str;
use crate::proto::frame::OutKind;
use crate::proto::handshake::Refusal;
use crate::proto::Now;
use log::debug;

/// When a connection next needs the loop: the end of its stage, or for an
/// open WebSocket the first of its idle timeout, its next ping and the
/// core's own deadline for it (auth, token expiry, host answers).
pub fn wake_at(stage: Stage, last_rx_ms: u64, idle_timeout_ms: u64, core: Option<u64>) -> u64 {
    match stage {
        Stage::Open { next_ping_ms } => last_rx_ms
            .saturating_add(idle_timeout_ms)
            .min(next_ping_ms)
            .min(core.unwrap_or(u64::MAX)),
        Stage::Handshake { deadline_ms }
        | Stage::Awaiting { deadline_ms }
        | Stage::Closing { deadline_ms, .. }
        | Stage::Refusing { deadline_ms, .. } => deadline_ms,
    }
}

/// What a due timer does to an open WebSocket (after the core's own timer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenTimer {
    /// Nothing received for `idle_timeout_ms`: close 1001.
    Idle,
    /// The ping interval passed: send a ping.
    Ping,
    /// Early (another deadline woke it): give idle buffers back.
    Release,
}

pub fn open_timer(
    last_rx_ms: u64,
    next_ping_ms: u64,
    idle_timeout_ms: u64,
    now_ms: u64,
) -> OpenTimer {
    if now_ms >= last_rx_ms.saturating_add(idle_timeout_ms) {
        OpenTimer::Idle
    } else if now_ms >= next_ping_ms {
        OpenTimer::Ping
    } else {
        OpenTimer::Release
    }
}

impl Conns {
    /// Makes sure the wheel wakes this connection at its earliest deadline.
    pub(super) fn schedule(&mut self, key: usize, app: &App) {
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        let core = match app {
            App::Gateway(hub) if conn.stage.is_open() => hub.deadline(key),
            _ => None,
        };
        let wake = wake_at(conn.stage, conn.last_rx_ms, self.cfg.idle_timeout_ms, core);
        let tick = self.wheel.tick_for(wake);
        if tick < conn.timer_tick {
            conn.timer_tick = tick;
            self.wheel.insert(Entry {
                key,
                id: conn.id,
                tick,
            });
        }
    }

    /// Schedules endpoint `index` (see `endpoint`) at `at_ms` in the same
    /// wheel; `run_timers` hands the entry back when it is due.
    pub fn schedule_endpoint(&mut self, index: usize, at_ms: u64) {
        let tick = self.wheel.tick_for(at_ms);
        self.wheel.insert(Entry {
            key: ENDPOINT_BASE + index,
            id: 0,
            tick,
        });
    }

    /// Whether any deadline is pending (else the loop may sleep until an event).
    pub fn has_timers(&self) -> bool {
        !self.wheel.is_empty()
    }

    /// Milliseconds until the wheel's next tick, for the poll timeout.
    pub fn until_next_tick(&self, now_ms: u64) -> u64 {
        self.wheel.until_next_tick(now_ms)
    }

    /// Fires every connection timer due at `now`; endpoint entries that are
    /// due go to `endpoints_due` for the loop to route.
    pub fn run_timers(&mut self, app: &mut App, now: Now, endpoints_due: &mut Vec<Entry>) {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.expire(now.ms, &mut due);
        for entry in due.drain(..) {
            if entry.key >= ENDPOINT_BASE {
                endpoints_due.push(entry);
                continue;
            }
            let current = self
                .slab
                .get_mut(entry.key)
                .filter(|c| c.id == entry.id && c.timer_tick == entry.tick);
            if let Some(conn) = current {
                conn.timer_tick = u64::MAX;
                self.on_conn_timer(entry.key, app, now);
                self.schedule(entry.key, app);
            }
        }
        self.due = due;
    }

    fn on_conn_timer(&mut self, key: usize, app: &mut App, now: Now) {
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        if let Some(deadline_ms) = conn.stage.deadline_ms() {
            if now.ms >= deadline_ms {
                if conn.proxied.take().is_some() {
                    let reason = "the connect proxy did not answer in time";
                    return self.refuse(key, Refusal::Unavailable, reason, app, now);
                }
                if matches!(conn.stage, Stage::Handshake { .. }) {
                    debug!("dropped {}: no complete request in time", conn.ip);
                }
                self.remove(key, app, now);
            }
            return;
        }
        if let App::Gateway(hub) = &mut *app {
            hub.on_timer(key, now);
            self.apply_outbox(app, now);
        }
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        let Stage::Open { next_ping_ms } = conn.stage else {
            return;
        };
        match open_timer(
            conn.last_rx_ms,
            next_ping_ms,
            self.cfg.idle_timeout_ms,
            now.ms,
        ) {
            OpenTimer::Idle => {
                debug!("client {} idle: closing", client_id_str(conn.id));
                self.metrics.idle_closes += 1;
                self.start_close(key, 1001, "idle timeout", app, now);
            }
            OpenTimer::Ping => {
                conn.stage = Stage::Open {
                    next_ping_ms: now.ms + self.cfg.ping_interval_ms,
                };
                self.queue_control(key, OutKind::Ping, &[], app, now);
            }
            OpenTimer::Release => conn.release_idle_buffers(&mut self.pool),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::timer::{TimerWheel, TICK_MS};

    const IDLE: u64 = 60_000;

    #[test]
    fn fixed_stages_wake_at_their_deadline() {
        let handshake = Stage::Handshake { deadline_ms: 5_000 };
        assert_eq!(wake_at(handshake, 0, IDLE, Some(1)), 5_000);
        let closing = Stage::Closing {
            peer_closed: false,
            deadline_ms: 7_000,
        };
        assert_eq!(wake_at(closing, 0, IDLE, None), 7_000);
        let refusing = Stage::Refusing {
            shut: true,
            deadline_ms: 1_000,
            drained: 0,
        };
        assert_eq!(wake_at(refusing, 0, IDLE, None), 1_000);
    }

    #[test]
    fn an_open_socket_wakes_at_the_first_of_idle_ping_and_core() {
        let open = Stage::Open {
            next_ping_ms: 20_000,
        };
        assert_eq!(wake_at(open, 0, IDLE, None), 20_000);
        assert_eq!(wake_at(open, 0, IDLE, Some(3_000)), 3_000);
        assert_eq!(wake_at(open, 0, 10_000, None), 10_000);
        // Traffic moves the idle deadline on; a huge timeout does not overflow.
        assert_eq!(wake_at(open, 50_000, u64::MAX, None), 20_000);
    }

    #[test]
    fn open_timer_closes_idle_pings_on_time_and_otherwise_releases() {
        // last_rx 0, ping due at 20 s, idle after 60 s.
        assert_eq!(open_timer(0, 20_000, IDLE, 19_999), OpenTimer::Release);
        assert_eq!(open_timer(0, 20_000, IDLE, 20_000), OpenTimer::Ping);
        assert_eq!(open_timer(0, 80_000, IDLE, 60_000), OpenTimer::Idle);
        // Idle wins over a ping due at the same time.
        assert_eq!(open_timer(0, 60_000, IDLE, 60_000), OpenTimer::Idle);
        assert_eq!(open_timer(45_000, 60_000, IDLE, 60_000), OpenTimer::Ping);
    }

    #[test]
    fn endpoint_deadlines_share_the_wheel_and_come_back_to_the_loop() {
        use crate::gateway::config::ShellConfig;
        let poll = mio::Poll::new().unwrap();
        let registry = poll.registry().try_clone().unwrap();
        let mut conns = Conns::new(
            registry,
            ShellConfig::for_tests(),
            std::time::Instant::now(),
        );
        let mut app = App::Echo;
        conns.schedule_endpoint(3, 1_000);
        assert!(conns.has_timers());
        let mut due = Vec::new();
        conns.run_timers(&mut app, Now { ms: 999, unix: 0 }, &mut due);
        assert!(due.is_empty());
        conns.run_timers(&mut app, Now { ms: 1_000, unix: 0 }, &mut due);
        assert_eq!(
            due.iter().map(|e| e.key).collect::<Vec<_>>(),
            [ENDPOINT_BASE + 3]
        );
        assert!(!conns.has_timers());
    }

    #[test]
    fn a_deadline_through_the_wheel_fires_within_one_tick_never_early() {
        let mut wheel = TimerWheel::default();
        let stage = Stage::Handshake { deadline_ms: 5_010 };
        let at = wake_at(stage, 0, IDLE, None);
        let tick = wheel.tick_for(at);
        wheel.insert(Entry {
            key: 1,
            id: 9,
            tick,
        });
        let mut due = Vec::new();
        wheel.expire(5_009, &mut due);
        assert!(due.is_empty(), "fired before its deadline");
        wheel.expire(5_010 + TICK_MS, &mut due);
        assert_eq!(
            due,
            [Entry {
                key: 1,
                id: 9,
                tick
            }]
        );
    }
}
