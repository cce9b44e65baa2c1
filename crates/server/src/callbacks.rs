//! Callbacks: when a process ends, its result is posted to the provider's callback URL until
//! the provider answers 2xx (`docs/design/server.md`, "callbacks").
//!
//! The result goes into the `callbacks_outbox` table in the same transaction that ends the
//! process (pass [`entry_for`]'s entry to `Processes::commit`), or afterwards with
//! [`enqueue`]. The worker ([`run`], one per node; several nodes may run it) posts due entries
//! and retries failures with exponential backoff (`[callbacks]` of the configuration); after
//! `max_attempts` failures an entry stays undelivered in the outbox. Delivery is at least once:
//! receivers deduplicate on `callbackId` (also sent as the `X-Tsm-Callback-Id` header).

use crate::app::AppState;
use crate::domain::*;
use crate::store::{Store, StoreError};
use std::time::Duration;

/// The JSON body posted for a process.
pub fn payload(p: &Process, callback: CallbackId) -> serde_json::Value {
    serde_json::json!({
        "callbackId": callback,
        "processId": p.id,
        "serviceInstanceId": p.service_instance_id,
        "seId": p.se_id.as_str(),
        "operation": p.operation.as_str(),
        "state": p.state.as_str(),
        "error": p.error.as_ref().map(|e| serde_json::json!({"code": e.code, "message": e.message})),
        "progress": {
            "stepsDone": p.progress.steps_done,
            "stepsTotal": p.progress.steps_total,
            "apdus": p.progress.apdus,
            "roundTrips": p.progress.round_trips,
        },
        "finishedAt": p.finished_at,
    })
}

/// The outbox entry for a process's result, or `None` when its provider has no callback URL.
/// For `Processes::commit(.., ProcessCommit { callback: Some(&entry), .. })`, so that the
/// process's end and its callback are one transaction.
pub async fn entry_for(store: &Store, process: &Process) -> Result<Option<CallbackOutboxEntry>, StoreError> {
    let Some(sp) = store.providers().get(process.provider_id).await? else { return Ok(None) };
    let Some(url) = sp.callback_url else { return Ok(None) };
    let id = CallbackId::new();
    let now = now_ms();
    Ok(Some(CallbackOutboxEntry {
        id,
        provider_id: process.provider_id,
        process_id: process.id,
        url,
        payload: payload(process, id),
        attempts: 0,
        next_attempt_at: now,
        delivered_at: None,
        last_error: None,
        created_at: now,
    }))
}

/// Queues the result of `process` for delivery (no-op without a callback URL). Returns the
/// entry's id.
pub async fn enqueue(store: &Store, process: &Process) -> Result<Option<CallbackId>, StoreError> {
    match entry_for(store, process).await? {
        Some(e) => {
            store.callbacks().enqueue(&e).await?;
            Ok(Some(e.id))
        }
        None => Ok(None),
    }
}

/// An HTTP client for callbacks (rustls with the ring provider, no redirects).
pub fn client(timeout: Duration) -> reqwest::Client {
    crate::http::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tsm/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("HTTP client with the installed rustls provider")
}

/// One pass: posts every due entry once. Returns how many were delivered.
pub async fn deliver_due(state: &AppState, client: &reqwest::Client) -> Result<usize, StoreError> {
    let cfg = &state.config.callbacks;
    let due = state.store.callbacks().due(now_ms(), 50).await?;
    let mut delivered = 0;
    for e in due {
        let attempt = e.attempts + 1;
        let result = client
            .post(&e.url)
            .header("X-Tsm-Callback-Id", e.id.to_string())
            .header("X-Tsm-Attempt", attempt.to_string())
            .json(&e.payload)
            .send()
            .await;
        let error = match result {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
            // The URL is the provider's own; the error text carries no secrets of ours.
            Err(err) => Some(without_url(&err)),
        };
        match error {
            None => {
                if state.store.callbacks().mark_delivered(e.id, now_ms()).await? {
                    delivered += 1;
                    tracing::info!(callback = %e.id, process = %e.process_id, attempt, "callback delivered");
                }
            }
            Some(err) => {
                let next = if attempt >= cfg.max_attempts { i64::MAX } else { now_ms().saturating_add(cfg.backoff_ms(attempt) as i64) };
                state.store.callbacks().record_failure(e.id, e.attempts, next, &err).await?;
                if next == i64::MAX {
                    tracing::warn!(callback = %e.id, process = %e.process_id, attempt, error = %err, "callback given up");
                } else {
                    tracing::info!(callback = %e.id, process = %e.process_id, attempt, error = %err, "callback failed; will retry");
                }
            }
        }
    }
    Ok(delivered)
}

fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_request() {
        "request failed"
    } else {
        "error"
    };
    let mut s = kind.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    if let Some(c) = cur.take() {
        s.push_str(": ");
        s.push_str(&c.to_string());
    }
    s
}

/// The worker: delivers due callbacks until the node shuts down. Polls the outbox at least
/// every second (entries may come from any node) and at once when woken on this node.
pub async fn run(state: AppState) {
    let cfg = state.config.callbacks.clone();
    let client = client(Duration::from_millis(cfg.timeout_ms));
    let poll = Duration::from_millis(cfg.initial_backoff_ms.clamp(10, 1000));
    tracing::info!("callbacks worker started");
    loop {
        if state.is_shutting_down() {
            break;
        }
        if let Err(e) = deliver_due(&state, &client).await {
            tracing::warn!(code = e.code(), error = %e, "callbacks worker: store error");
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = state.wake.notified() => {}
            _ = state.shutting_down() => break,
        }
    }
    tracing::info!("callbacks worker stopped");
}
