//! The TCP acceptor the server runs on: poem's own, plus `TCP_NODELAY` on every socket.
//!
//! A realtime gateway writes many small frames (a cursor move is ~150 bytes). With Nagle's
//! algorithm on, a small write that follows an unacknowledged one waits for the peer's delayed
//! ACK, which adds ~40 ms to the tail of delivery; the load generator measured exactly that.

use std::io;

use poem::{
    http::uri::Scheme,
    listener::{Acceptor, TcpAcceptor},
    web::{LocalAddr, RemoteAddr},
};
use tokio::net::{TcpListener, TcpStream};

/// Accepts connections like [`TcpAcceptor`] and disables Nagle's algorithm on each.
pub struct NoDelayAcceptor {
    inner: TcpAcceptor,
}

impl NoDelayAcceptor {
    pub fn from_tokio(listener: TcpListener) -> io::Result<Self> {
        Ok(Self {
            inner: TcpAcceptor::from_tokio(listener)?,
        })
    }
}

impl Acceptor for NoDelayAcceptor {
    type Io = TcpStream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(TcpStream, LocalAddr, RemoteAddr, Scheme)> {
        let accepted = self.inner.accept().await?;
        if let Err(error) = accepted.0.set_nodelay(true) {
            // The connection still works, only with Nagle's delays; not worth refusing it.
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        Ok(accepted)
    }
}
