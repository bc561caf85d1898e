//! `fanout-worker dlq list|show|redrive`: the operator's view of the dead-letter queue, on either backend
//! (the queue's dead-letter stream on Redis Streams, the dead-letter queue on SQS).
//!
//! Dead letters are named by the job id in their body; a body that is not a job (which is why it was
//! dead-lettered) is listed as `(not a job)` and can only be redriven with `--all`.

use crate::config::DlqAction;
use common::job::{Job, Target};
use common::queue::{DeadLetter, Queue, QueueError};
use std::io::Write;

/// Most dead letters `show` and `redrive --job` look through.
pub const SCAN_MAX: usize = 10_000;

/// Why a dlq command failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    #[error("no dead letter for job {0}")]
    NotFound(String),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// The job id of a dead letter, if its body is a job.
fn job_id(letter: &DeadLetter) -> Option<String> {
    Job::decode(&letter.body).ok().map(|j| j.id)
}

/// One line of `list`.
fn line(letter: &DeadLetter) -> String {
    let reason = letter.reason.replace(['\n', '\t'], " ");
    match Job::decode(&letter.body) {
        Ok(job) => {
            let recipients = match &job.target {
                Target::Connections { ids } => ids.len().to_string(),
                _ => "-".to_owned(),
            };
            format!("{}\t{}\t{recipients}\t{reason}", job.id, job.target_kind())
        }
        Err(_) => format!("(not a job)\t-\t-\t{reason}"),
    }
}

/// Runs one dlq command against `queue`, writing its output to `out`.
pub async fn run(
    queue: &dyn Queue,
    action: &DlqAction,
    out: &mut dyn Write,
) -> Result<(), DlqError> {
    match action {
        DlqAction::List { max } => {
            writeln!(out, "job_id\ttarget\trecipients\treason")?;
            for letter in queue.peek_dead_letters(*max).await? {
                writeln!(out, "{}", line(&letter))?;
            }
        }
        DlqAction::Show { job } => {
            let letter = queue
                .peek_dead_letters(SCAN_MAX)
                .await?
                .into_iter()
                .find(|l| job_id(l).as_deref() == Some(job.as_str()))
                .ok_or_else(|| DlqError::NotFound(job.clone()))?;
            writeln!(out, "reason: {}", letter.reason)?;
            writeln!(out, "{}", letter.body)?;
        }
        DlqAction::Redrive { job, all } => {
            let moved = match job {
                Some(id) if !all => {
                    let id = id.clone();
                    let moved = queue
                        .redrive(&move |l| job_id(l).as_deref() == Some(id.as_str()), 1)
                        .await?;
                    if moved == 0 {
                        return Err(DlqError::NotFound(job.clone().unwrap_or_default()));
                    }
                    moved
                }
                _ => queue.redrive(&|_| true, usize::MAX).await?,
            };
            writeln!(out, "redriven: {moved}")?;
        }
    }
    Ok(())
}
