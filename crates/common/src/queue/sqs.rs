//! Amazon SQS backend of [`super::Queue`] (being written).
#![allow(dead_code, unused_variables)]
use super::*;
use async_trait::async_trait;

#[derive(Debug)]
pub struct SqsQueue;

impl SqsQueue {
    pub async fn connect(
        queue_url: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
        options: QueueOptions,
    ) -> Result<Self, QueueError> {
        Err(QueueError::Url("SQS backend not built yet".into()))
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send_batch(&self, jobs: &[Job]) -> Result<(), QueueError> {
        Err(QueueError::Unavailable("x".into()))
    }
    async fn send_delayed(&self, job: &Job, delay: Duration) -> Result<(), QueueError> {
        Err(QueueError::Unavailable("x".into()))
    }
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        Err(QueueError::Unavailable("x".into()))
    }
    async fn ack(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
        Err(QueueError::Unavailable("x".into()))
    }
    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<(), QueueError> {
        Err(QueueError::Unavailable("x".into()))
    }
    async fn release(&self, receipt: &Receipt) -> Result<(), QueueError> {
        Err(QueueError::Unavailable("x".into()))
    }
    async fn dead_letter(&self, message: &Received, reason: &str) -> Result<(), QueueError> {
        Err(QueueError::Unavailable("x".into()))
    }
    async fn peek_dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        Err(QueueError::Unavailable("x".into()))
    }
    async fn ping(&self) -> Result<(), QueueError> {
        Err(QueueError::Unavailable("x".into()))
    }
    async fn depth(&self) -> Result<u64, QueueError> {
        Err(QueueError::Unavailable("x".into()))
    }
    fn backend(&self) -> &'static str {
        "sqs"
    }
}
