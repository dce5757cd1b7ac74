//! `db-proxy`: a TCP proxy in front of PostgreSQL that the fault harness
//! (`tests/load/faults.sh`) cuts and restores, to take the database away
//! from a running service without touching the server itself.
//!
//! ```sh
//! db-proxy 127.0.0.1:6543 127.0.0.1:5432 &   # listen, upstream
//! kill -USR1 $!    # cut: every proxied connection is reset, new ones are refused
//! kill -USR2 $!    # restore: new connections reach PostgreSQL again
//! ```
//!
//! While cut, a new connection is accepted and reset at once (the client
//! sees what a stopped server's host answers: a refused/reset connection,
//! immediately), and every open connection is closed with a TCP reset
//! (`SO_LINGER` 0), so the pool's sockets fail on their next read or write.
//! With `DB_PROXY_MODE=blackhole` a cut instead holds every socket open and
//! forwards nothing (a network partition: the client waits for its own
//! timeouts); the held sockets are closed on restore.
//!
//! Each change of state is printed on stderr as one line with the Unix time
//! in microseconds (`db-proxy cut at 1764757000123456`), which the harness
//! uses as the fault's exact start and end. SIGTERM or SIGINT stops it.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    signal::unix::{SignalKind, signal},
    sync::watch,
};

/// How a cut behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Reset open connections and refuse new ones.
    Reset,
    /// Hold every socket and forward nothing until restored.
    Blackhole,
}

fn unix_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .context("usage: db-proxy LISTEN_ADDR UPSTREAM_ADDR")?;
    let upstream: Arc<str> = args
        .next()
        .context("usage: db-proxy LISTEN_ADDR UPSTREAM_ADDR")?
        .into();
    let mode = match std::env::var("DB_PROXY_MODE").as_deref() {
        Ok("blackhole") => Mode::Blackhole,
        Ok("reset") | Err(_) => Mode::Reset,
        Ok(other) => anyhow::bail!("DB_PROXY_MODE must be reset or blackhole (got {other:?})"),
    };
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!(
        "db-proxy listening on {} -> {upstream} (mode {mode:?})",
        listener.local_addr()?
    );

    // `true` while cut.
    let (cut_tx, cut_rx) = watch::channel(false);
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let _ = client.set_nodelay(true);
                if *cut_rx.borrow() {
                    refuse(client, mode, cut_rx.clone());
                    continue;
                }
                tokio::spawn(proxy(client, upstream.clone(), mode, cut_rx.clone()));
            }
            _ = usr1.recv() => {
                cut_tx.send_replace(true);
                eprintln!("db-proxy cut at {}", unix_micros());
            }
            _ = usr2.recv() => {
                cut_tx.send_replace(false);
                eprintln!("db-proxy restored at {}", unix_micros());
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    Ok(())
}

/// A connection that arrives while cut.
fn refuse(client: TcpStream, mode: Mode, mut cut: watch::Receiver<bool>) {
    match mode {
        Mode::Reset => reset(client),
        Mode::Blackhole => {
            tokio::spawn(async move {
                // Held, silent, until restored (then closed: the client retries).
                let _ = cut.wait_for(|cut| !*cut).await;
                drop(client);
            });
        }
    }
}

/// Closes `stream` with a TCP reset rather than a graceful FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn proxy(
    mut client: TcpStream,
    upstream: Arc<str>,
    mode: Mode,
    mut cut: watch::Receiver<bool>,
) {
    let connect = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&*upstream));
    let mut server = match connect.await {
        Ok(Ok(server)) => server,
        _ => {
            reset(client);
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let was_cut = tokio::select! {
        _ = copy_bidirectional(&mut client, &mut server) => false,
        _ = async { let _ = cut.wait_for(|cut| *cut).await; } => true,
    };
    if was_cut && mode == Mode::Blackhole {
        let _ = cut.wait_for(|cut| !*cut).await;
    }
    reset(client);
    reset(server);
}
