//! Query handlers that run a command (serf's event handlers, for queries): the query's payload
//! on the command's stdin, its stdout the answer.
//!
//! The command runs under `sh -c` with `DCORE_QUERY_NAME`, `DCORE_QUERY_ORIGIN`,
//! `DCORE_QUERY_ID` and `DCORE_NODE_NAME` in its environment. It must finish by the query's
//! deadline (it is killed then, and nothing is answered) and write at most what an answer may
//! hold (`query_response_bytes_max` less the message's own fields; more, and it is killed and
//! nothing is answered). A command that exits with an error still answers with its stdout
//! (serf does the same); the status and the start of its stderr go to the log. At most
//! [`HANDLER_RUNS_MAX`] commands of one handler run at once; further queries wait in the
//! handler's queue (`node::HANDLER_QUEUE`), and past it are dropped and counted.

use crate::node::{IncomingQuery, Node};
use serde::{Deserialize, Serialize};
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Semaphore};

/// Commands of one handler running at once at most.
pub const HANDLER_RUNS_MAX: usize = 4;
/// Bytes of a command's stderr kept for the log.
const STDERR_LOG_BYTES: u64 = 1024;

/// A query handler: queries named `name` that select this node run `command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryHandlerConfig {
    /// The query name it answers.
    pub name: String,
    /// The shell command (run with `sh -c`).
    pub command: String,
}

impl QueryHandlerConfig {
    /// Parses the flag's `NAME=COMMAND`.
    pub fn parse(text: &str) -> Option<Self> {
        let (name, command) = text.split_once('=')?;
        Some(QueryHandlerConfig {
            name: name.trim().to_string(),
            command: command.to_string(),
        })
    }
}

/// Takes the handler's queries until the agent closes, running its command for each.
pub(crate) async fn serve(
    node: Node,
    handler: QueryHandlerConfig,
    mut queries: mpsc::Receiver<IncomingQuery>,
    answer_max: usize,
    closing: watch::Sender<bool>,
) {
    let runs = Arc::new(Semaphore::new(HANDLER_RUNS_MAX));
    let handler = Arc::new(handler);
    let me = node.local_member().info.id.to_string();
    let mut closing = closing.subscribe();
    loop {
        let q = tokio::select! {
            _ = closing.wait_for(|v| *v) => return,
            q = queries.recv() => match q {
                Some(q) => q,
                None => return,
            },
        };
        let Ok(permit) = runs.clone().acquire_owned().await else {
            return;
        };
        let (handler, me) = (handler.clone(), me.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let name = handler.name.clone();
            match run(&handler, &me, &q, answer_max).await {
                Ok(answer) => {
                    if let Err(e) = q.respond(answer).await {
                        tracing::warn!(handler = %name, error = %e, "query answer not sent");
                    }
                }
                Err(why) => tracing::warn!(handler = %name, "query not answered: {why}"),
            }
        });
    }
}

/// Runs the command for one query; its stdout, or why there is no answer.
async fn run(
    h: &QueryHandlerConfig,
    me: &str,
    q: &IncomingQuery,
    answer_max: usize,
) -> Result<Vec<u8>, String> {
    let r = &q.request;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&h.command)
        .env("DCORE_QUERY_NAME", &r.name)
        .env("DCORE_QUERY_ORIGIN", r.origin.as_str())
        .env("DCORE_QUERY_ID", r.id.to_string())
        .env("DCORE_NODE_NAME", me)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", h.command))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("no pipes to the command".into());
    };
    let payload = r.payload.clone();
    let work = async {
        let write = async move {
            // A command that does not read its stdin closes the pipe: not an error.
            let _ = stdin.write_all(&payload).await;
        };
        let read_out = async {
            let mut out = Vec::new();
            let _ = stdout
                .take(answer_max as u64 + 1)
                .read_to_end(&mut out)
                .await;
            out
        };
        let read_err = async {
            let mut err = Vec::new();
            let _ = stderr.take(STDERR_LOG_BYTES).read_to_end(&mut err).await;
            err
        };
        let ((), out, err) = tokio::join!(write, read_out, read_err);
        if out.len() > answer_max {
            return Err(format!(
                "the command wrote more than the {answer_max} bytes an answer may hold: killed"
            ));
        }
        let status = child.wait().await.map_err(|e| e.to_string())?;
        if !status.success() {
            tracing::warn!(
                handler = %h.name,
                %status,
                stderr = %String::from_utf8_lossy(&err),
                "query handler command failed; its output is the answer"
            );
        }
        Ok(out)
    };
    match tokio::time::timeout_at(q.deadline(), work).await {
        Ok(r) => r,
        Err(_) => Err("the command ran past the query's deadline: killed".into()),
    }
    // `child` is killed when dropped here, if it still runs.
}
