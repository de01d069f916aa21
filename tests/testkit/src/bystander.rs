//! A well-behaved client running beside a hostile one: proof that keygate keeps
//! serving other people while it is being attacked, and loses none of their usage.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::TestApp;
use crate::mock_openai::REPLY_TEXT;

/// How long one of the bystander's requests may take before it counts as a failure
/// (generous: the machine may be loaded; an attack that blocks the server blocks
/// for much longer).
const PATIENCE: Duration = Duration::from_secs(10);

/// A person with their own grant making plain and streamed chat calls in a loop.
pub struct Bystander {
    grant_id: String,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Outcome>,
}

#[derive(Debug, Default)]
struct Outcome {
    ok: u64,
    failures: Vec<String>,
}

impl TestApp {
    /// Starts a [`Bystander`]: a new person, key and grant, and a client of its own
    /// (own connections) calling `/v1/chat/completions` until [`Bystander::finish`].
    pub async fn bystander(&self) -> Bystander {
        let grant = self.enrolled_grant(None).await;
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::builder()
            .timeout(PATIENCE)
            .build()
            .expect("client");
        let url = format!("{}/chat/completions", self.base_url);
        let key = grant.api_key.clone();
        let flag = stop.clone();
        let served = Arc::new(AtomicU64::new(0));
        let count = served.clone();
        let task = tokio::spawn(async move {
            let mut outcome = Outcome::default();
            let mut round = 0u64;
            while !flag.load(Ordering::SeqCst) {
                let stream = round % 2 == 1;
                round += 1;
                let body = json!({"model": "gpt-4o-mini", "stream": stream,
                    "messages": [{"role": "user", "content": "Hi"}]});
                let res = client.post(&url).bearer_auth(&key).json(&body).send().await;
                let verdict = match res {
                    Err(e) => Err(format!("request {round}: {e}")),
                    Ok(res) if res.status() != 200 => {
                        Err(format!("request {round}: status {}", res.status()))
                    }
                    Ok(res) => match res.text().await {
                        Err(e) => Err(format!("request {round}: body {e}")),
                        Ok(text) if stream && !text.contains("data: [DONE]") => {
                            Err(format!("request {round}: stream without [DONE]"))
                        }
                        Ok(text) if !stream && !text.contains(REPLY_TEXT) => {
                            Err(format!("request {round}: answer without the reply"))
                        }
                        Ok(_) => Ok(()),
                    },
                };
                match verdict {
                    Ok(()) => {
                        outcome.ok += 1;
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => outcome.failures.push(e),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            outcome
        });
        Bystander {
            grant_id: grant.grant_id,
            stop,
            served,
            task,
        }
    }
}

impl Bystander {
    /// Lets the loop run until it has been answered `min` times (at most 30 s), stops
    /// it, and asserts that every request succeeded and that keygate counted each one
    /// in the grant's usage: nothing lost.
    pub async fn finish(self, app: &TestApp, min: u64) -> u64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.served.load(Ordering::SeqCst) < min
            && std::time::Instant::now() < deadline
            && !self.task.is_finished()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.store(true, Ordering::SeqCst);
        let outcome = self.task.await.expect("bystander task");
        assert!(
            outcome.failures.is_empty(),
            "the bystander was disturbed: {:?} ({} ok)",
            outcome.failures,
            outcome.ok
        );
        assert!(
            outcome.ok >= min,
            "the bystander got only {} answers (wanted ≥ {min})",
            outcome.ok
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let report = app.usage(&self.grant_id, "").await;
            let counted: u64 = report["days"]
                .as_array()
                .map(|days| days.iter().filter_map(|d| d["requests"].as_u64()).sum())
                .unwrap_or(0);
            if counted == outcome.ok {
                return outcome.ok;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "usage counted {counted} of the bystander's {} requests",
                outcome.ok
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
