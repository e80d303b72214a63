//! The connection task: owns the socket; its [`Table`] owns the calls.
//!
//! It reads and writes in one `select!` loop, so neither side waits for the other: frames to
//! send sit in a short outbox that is flushed while reading goes on, and new commands are
//! taken only while the outbox has room. Events go to each call's bounded queue without
//! waiting; a call whose caller has that many events unread is failed on its own. When the
//! socket is lost every live call fails with the cause, and the next call opened reconnects.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::ready;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};

use super::socket::{self, Socket};
use super::table::{Lost, Table};
use super::{Command, Dropped, Settings};
use crate::ErrorKind;

/// Frames waiting to be written before new commands are taken.
const OUTBOX_LIMIT: usize = 64;

/// How often deadlines and the keepalive are checked.
const TICK: Duration = Duration::from_millis(500);

/// How long a goodbye (close frame) may take once every handle is gone.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type Sink = SplitSink<Socket, Message>;
type Source = SplitStream<Socket>;

/// Runs until every handle and call is gone.
pub(super) async fn run(
    settings: Arc<Settings>,
    socket: Socket,
    mut commands: mpsc::Receiver<Command>,
    mut drops: mpsc::UnboundedReceiver<Dropped>,
) {
    let mut table = Table::new(settings.clone());
    let mut socket = Some(socket);
    let mut drops_open = true;
    loop {
        if let Some(open) = socket.take() {
            match serve(
                &mut table,
                open,
                settings.keepalive,
                &mut commands,
                &mut drops,
            )
            .await
            {
                Exit::Done => return,
                Exit::Lost(cause) => {
                    tracing::debug!(target: "tdx_volt::connect", %cause, "volt websocket lost");
                    settings.supervisor.lost();
                    table.fail_all(&cause);
                }
            }
        }
        // Disconnected: the next call to open reconnects.
        let command = tokio::select! {
            command = commands.recv() => command,
            dropped = drops.recv(), if drops_open => {
                match dropped {
                    Some(dropped) => table.on_drop(dropped),
                    None => drops_open = false,
                }
                continue;
            }
        };
        let Some(command) = command else {
            return;
        };
        let Command::Open(open) = command else {
            table.on_command(command);
            continue;
        };
        if table.dropped_before_open(&open) {
            table.on_command(Command::Open(open));
            continue;
        }
        // Connect again, as the policy allows, for this call and any that come meanwhile.
        let mut queue = vec![(Instant::now(), Command::Open(open))];
        socket = reconnect(&settings, &mut table, &mut queue, &mut commands).await;
        for (_, command) in queue {
            table.on_command(command);
        }
    }
}

/// Disconnected with calls waiting in `queue` (opens and what their callers sent since, in
/// arrival order): waits out the policy's backoff (taking new commands meanwhile), then
/// tries; repeats until a socket is open, or no open is left waiting. An open whose own
/// timeout passes first fails with a timeout; when no more attempts will be made, every
/// waiting open fails with the reason. What is left in `queue` goes to the table.
async fn reconnect(
    settings: &Settings,
    table: &mut Table,
    queue: &mut Vec<(Instant, Command)>,
    commands: &mut mpsc::Receiver<Command>,
) -> Option<Socket> {
    let supervisor = &settings.supervisor;
    loop {
        let turn = match supervisor.next_attempt() {
            Ok(turn) => turn,
            Err(e) => {
                refuse_all(table, queue, Lost::from(&e));
                return None;
            }
        };
        if let Some(at) = turn {
            let at = Instant::from_std(at);
            loop {
                expire(table, queue, Instant::now());
                if !queue.iter().any(|(_, c)| matches!(c, Command::Open(_))) {
                    // Nobody needs the connection any more.
                    return None;
                }
                let first_deadline = queue
                    .iter()
                    .filter_map(|(arrived, c)| match c {
                        Command::Open(open) => Some(*arrived + open.exchange_timeout),
                        _ => None,
                    })
                    .min()
                    .unwrap_or(at);
                tokio::select! {
                    () = tokio::time::sleep_until(at) => break,
                    () = tokio::time::sleep_until(first_deadline) => {}
                    command = commands.recv() => match command {
                        Some(command) => queue.push((Instant::now(), command)),
                        // Every handle is gone: the waiting calls' callers are too.
                        None => return None,
                    },
                }
            }
        }
        supervisor.connecting();
        let attempt = settings.attempt();
        match socket::open(&settings.target).await {
            Ok(fresh) => {
                attempt.connected();
                supervisor.connected();
                return Some(fresh);
            }
            Err(e) => {
                attempt.failed(&e);
                supervisor.failed(&e);
                if !supervisor.waits_for_connection() {
                    refuse_all(table, queue, Lost::from(&e));
                    return None;
                }
                // Only what is queued now: callers retrying must not keep the task here.
                for _ in 0..commands.len() {
                    match commands.try_recv() {
                        Ok(command) => queue.push((Instant::now(), command)),
                        Err(_) => break,
                    }
                }
            }
        }
    }
}

/// Fails the waiting opens whose own timeout has passed (and hands their other commands to
/// the table, which drops them with the call).
fn expire(table: &mut Table, queue: &mut Vec<(Instant, Command)>, now: Instant) {
    let overdue: Vec<u64> = queue
        .iter()
        .filter_map(|(arrived, c)| match c {
            Command::Open(open)
                if *arrived + open.exchange_timeout <= now || open.delivery.is_gone() =>
            {
                Some(open.id)
            }
            _ => None,
        })
        .collect();
    if overdue.is_empty() {
        return;
    }
    let why = Lost {
        kind: ErrorKind::Timeout,
        message: "no connection to the Volt within the call's timeout".to_owned(),
    };
    let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(queue)
        .into_iter()
        .partition(|(_, c)| overdue.contains(&c.id()));
    *queue = kept;
    table.refusal = Some(why);
    for (_, command) in gone {
        table.on_command(command);
    }
    table.refusal = None;
}

/// Fails every waiting open with `why`.
fn refuse_all(table: &mut Table, queue: &mut Vec<(Instant, Command)>, why: Lost) {
    table.refusal = Some(why);
    for (_, command) in queue.drain(..) {
        table.on_command(command);
    }
    table.refusal = None;
}

/// Why [`serve`] returned.
enum Exit {
    /// Every handle is gone; the socket was closed politely.
    Done,
    /// The socket failed or was closed by the Volt.
    Lost(Lost),
}

async fn serve(
    table: &mut Table,
    socket: Socket,
    keepalive: Duration,
    commands: &mut mpsc::Receiver<Command>,
    drops: &mut mpsc::UnboundedReceiver<Dropped>,
) -> Exit {
    let (mut sink, mut source) = socket.split();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut pinged = false;
    let mut drops_open = true;
    loop {
        tokio::select! {
            incoming = source.next() => {
                last_heard = Instant::now();
                pinged = false;
                match incoming {
                    Some(Ok(message)) => {
                        if let Err(lost) = on_message(table, message) {
                            return Exit::Lost(lost);
                        }
                    }
                    Some(Err(e)) => return Exit::Lost(socket_error(&e)),
                    None => return Exit::Lost(Lost::closed("the Volt closed the connection")),
                }
            }
            written = flush(&mut sink, &mut table.outbox), if table.unflushed => {
                match written {
                    Ok(()) => table.unflushed = !table.outbox.is_empty(),
                    Err(e) => return Exit::Lost(socket_error(&e)),
                }
            }
            command = commands.recv(), if table.outbox.len() < OUTBOX_LIMIT => {
                match command {
                    Some(command) => table.on_command(command),
                    None => {
                        // Every handle and call is gone.
                        goodbye(&mut sink, &mut table.outbox, &mut source).await;
                        return Exit::Done;
                    }
                }
            }
            dropped = drops.recv(), if drops_open => {
                match dropped {
                    Some(dropped) => table.on_drop(dropped),
                    None => drops_open = false,
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                table.expire(now);
                let quiet = now.saturating_duration_since(last_heard);
                if quiet >= keepalive.saturating_mul(2) {
                    return Exit::Lost(Lost {
                        kind: ErrorKind::Timeout,
                        message: format!(
                            "the Volt sent nothing for {quiet:?}, not even a pong; \
                             the connection is considered dead"
                        ),
                    });
                }
                if quiet >= keepalive && !pinged {
                    pinged = true;
                    table.ping();
                }
            }
        }
    }
}

fn on_message(table: &mut Table, message: Message) -> Result<(), Lost> {
    match message {
        Message::Binary(_) | Message::Text(_) => table.on_message(&message),
        Message::Close(frame) => {
            let why = frame
                .map(|f| format!(" (code {}, {:?})", u16::from(f.code), f.reason.as_str()))
                .unwrap_or_default();
            return Err(Lost::closed(format!("the Volt closed the connection{why}")));
        }
        // Pings are answered by the websocket layer.
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
    }
    Ok(())
}

fn socket_error(e: &tungstenite::Error) -> Lost {
    Lost::closed(format!("the connection failed: {e}"))
}

/// Writes what the outbox holds and flushes. Messages leave the outbox only into the sink, so
/// the future can be dropped at any point without losing one.
async fn flush(sink: &mut Sink, outbox: &mut VecDeque<Message>) -> Result<(), tungstenite::Error> {
    poll_fn(|cx| {
        while !outbox.is_empty() {
            ready!(sink.poll_ready_unpin(cx))?;
            if let Some(message) = outbox.pop_front() {
                sink.start_send_unpin(message)?;
            }
        }
        sink.poll_flush_unpin(cx)
    })
    .await
}

/// Flushes what is queued and closes the socket, within [`CLOSE_TIMEOUT`].
async fn goodbye(sink: &mut Sink, outbox: &mut VecDeque<Message>, source: &mut Source) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if flush(sink, outbox).await.is_ok() && sink.close().await.is_ok() {
            // Read until the Volt answers the close (or goes).
            while let Some(Ok(_)) = source.next().await {}
        }
    })
    .await;
}
