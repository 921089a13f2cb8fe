//! Queries on a running node: the caller's stream of answers, the handlers that answer a query
//! name, and the built-in handler of cluster-wide key commands.

use super::{NodeError, Request};
use crate::cluster::{QueryAnswer, QueryRequest};
use crate::identity::{Key, NodeId};
use crate::transport::frame::FrameSealer;
use std::collections::BTreeMap;
use tokio::sync::{mpsc, oneshot};

/// Queries a handler may hold before the node drops new ones (counted `queries_unhandled`).
pub const HANDLER_QUEUE: usize = 64;

/// Query names starting with this are the node's own (cluster key commands); an application
/// cannot register a handler for them.
pub const INTERNAL_PREFIX: &str = "_dcore";

/// The query name of the cluster key commands.
pub const KEYS_QUERY: &str = "_dcore_keys";

/// The answers to one query, as they come (see [`super::Node::query`]).
#[derive(Debug)]
pub struct QueryStream {
    id: u64,
    rx: mpsc::UnboundedReceiver<QueryAnswer>,
    done: bool,
}

/// Everything a query got, once it ended (see [`QueryStream::collect`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryResults {
    /// Members that acknowledged.
    pub acks: Vec<NodeId>,
    /// Each answering member's answer.
    pub responses: BTreeMap<NodeId, Vec<u8>>,
    /// Members the filters selected at the start that neither acknowledged nor answered.
    pub missing: Vec<NodeId>,
}

impl QueryStream {
    pub(crate) fn new(id: u64, rx: mpsc::UnboundedReceiver<QueryAnswer>) -> Self {
        QueryStream {
            id,
            rx,
            done: false,
        }
    }

    /// The query's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next acknowledgement or answer, then [`QueryAnswer::Done`] at the timeout, then
    /// `None` (also when the node shuts down first).
    pub async fn next(&mut self) -> Option<QueryAnswer> {
        if self.done {
            return None;
        }
        let a = self.rx.recv().await;
        self.done = matches!(a, None | Some(QueryAnswer::Done(_)));
        a
    }

    /// Waits for the timeout and returns everything that came.
    pub async fn collect(mut self) -> Result<QueryResults, NodeError> {
        let mut r = QueryResults::default();
        while let Some(a) = self.next().await {
            match a {
                QueryAnswer::Ack(from) => r.acks.push(from),
                QueryAnswer::Response { from, payload } => {
                    r.responses.insert(from, payload);
                }
                QueryAnswer::Done(s) => {
                    r.acks = s.acks;
                    r.missing = s.missing;
                    return Ok(r);
                }
            }
        }
        Err(NodeError::Closed)
    }
}

/// A query for a handler registered with [`super::Node::query_handler`].
#[derive(Debug)]
pub struct IncomingQuery {
    /// What is asked, by whom, until when (in the core's time).
    pub request: QueryRequest,
    deadline: tokio::time::Instant,
    requests: mpsc::Sender<Request>,
}

impl IncomingQuery {
    pub(crate) fn new(
        request: QueryRequest,
        deadline: tokio::time::Instant,
        requests: mpsc::Sender<Request>,
    ) -> Self {
        IncomingQuery {
            request,
            deadline,
            requests,
        }
    }

    /// The last moment an answer is taken.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// Answers the query (once, before its deadline; see `Swim::respond` for the refusals).
    pub async fn respond(self, payload: Vec<u8>) -> Result<(), NodeError> {
        let (reply, rx) = oneshot::channel();
        let r = &self.request;
        (self.requests)
            .send(Request::Respond {
                origin: r.origin.clone(),
                id: r.id,
                payload,
                reply,
            })
            .await
            .map_err(|_| NodeError::Closed)?;
        Ok(rx.await.map_err(|_| NodeError::Closed)??)
    }
}

/// A cluster key command, the payload of a [`KEYS_QUERY`] (JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "op")]
pub enum KeysOp {
    /// Install a key that decrypts.
    Install {
        /// The key, base64.
        key: String,
    },
    /// Make an installed key the one that encrypts.
    Use {
        /// The key, base64.
        key: String,
    },
    /// Remove a key that no longer encrypts.
    Remove {
        /// The key, base64.
        key: String,
    },
    /// Tell the installed keys.
    List,
}

/// One node's answer to a [`KeysOp`] (JSON): its keys after the command, or why it failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeysAnswer {
    /// The installed keys' ids (`0x3a`), after the command.
    #[serde(default)]
    pub keys: Vec<String>,
    /// The one that encrypts.
    #[serde(default)]
    pub primary: Option<String>,
    /// Why the command failed here (nothing changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Carries out a key command on this node's keyring.
pub(crate) fn keys_command(security: &FrameSealer, payload: &[u8]) -> KeysAnswer {
    let fail = |e: String| KeysAnswer {
        error: Some(e),
        ..KeysAnswer::default()
    };
    let op: KeysOp = match serde_json::from_slice(payload) {
        Ok(op) => op,
        Err(e) => return fail(format!("bad key command: {e}")),
    };
    let Some(ring) = security.keyring() else {
        return fail("encryption is off: no keyring".into());
    };
    let parse = |k: &str| Key::from_base64(k).map_err(|e| e.to_string());
    let mut ring = ring.write().expect("keyring lock");
    let done = match op {
        KeysOp::Install { key } => {
            parse(&key).and_then(|k| ring.install(k).map_err(|e| e.to_string()))
        }
        KeysOp::Use { key } => {
            parse(&key).and_then(|k| ring.use_key(&k).map_err(|e| e.to_string()))
        }
        KeysOp::Remove { key } => {
            parse(&key).and_then(|k| ring.remove(&k).map_err(|e| e.to_string()))
        }
        KeysOp::List => Ok(()),
    };
    let keys = ring.keys();
    KeysAnswer {
        keys: keys.iter().map(|k| format!("{:#04x}", k.id)).collect(),
        primary: (keys.iter().find(|k| k.primary)).map(|k| format!("{:#04x}", k.id)),
        error: done.err(),
    }
}
