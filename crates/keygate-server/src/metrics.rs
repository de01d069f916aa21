//! Prometheus metrics, served at `GET /metrics` (optionally behind `metrics_token`).
//!
//! Every metric is registered when the state is built; the children a request touches
//! are looked up by labels that are all `&'static str` or names from the price table
//! (the config's, so bounded): a model name that is not priced is `other`, a request
//! without one `none`. No label ever holds a secret, a person's id or a grant's id.

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use keygate_core::policy::Deny;
use keygate_core::price::PriceTable;
use keygate_store::UsageCounts;
use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::state::AppState;

/// The route groups of `keygate_requests_total`.
pub const GROUPS: [&str; 6] = ["v1", "api", "admin", "connect", "web", "health"];
/// Status classes.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// The model label of a request that names no model.
pub const NO_MODEL: &str = "none";
/// The model label of a model name that is not in the price table.
pub const OTHER_MODEL: &str = "other";

/// Seconds, from 1 ms to a minute: keygate's own time and the upstream's first byte.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];
/// Seconds, up to ten minutes: a whole upstream answer (long streams).
const TOTAL_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0, 600.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    added: HistogramVec,
    upstream_first_byte: HistogramVec,
    upstream_total: HistogramVec,
    open_streams: IntGauge,
    tokens: IntCounterVec,
    cost: CounterVec,
    refusals: IntCounterVec,
    unseals: IntCounterVec,
    operator_key_refusals: IntCounterVec,
    flush: HistogramVec,
    reseal_remaining: IntGauge,
    resealed: IntCounter,
    /// The price table's names, sorted, then `other`: what a model label can be.
    models: Vec<String>,
}

/// The model label of a request, kept in its extensions by the proxy for the
/// middleware that counts it: an index into [`Metrics`]' model names.
#[derive(Clone, Copy, Debug)]
pub struct ModelLabel(usize);

impl Metrics {
    pub fn new(prices: &PriceTable) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "keygate_requests_total",
                "Requests answered, by route group, status class and model (priced names only)",
            ),
            &["group", "class", "model"],
        )?;
        let added = HistogramVec::new(
            HistogramOpts::new(
                "keygate_added_seconds",
                "Time keygate itself adds to a request: until the answer's headers, less the upstream's time to first byte",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["group"],
        )?;
        let upstream_first_byte = HistogramVec::new(
            HistogramOpts::new(
                "keygate_upstream_first_byte_seconds",
                "Time from sending a request upstream to the upstream's answer headers",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["model"],
        )?;
        let upstream_total = HistogramVec::new(
            HistogramOpts::new(
                "keygate_upstream_total_seconds",
                "Time from sending a request upstream to the end of its answer (streamed or not)",
            )
            .buckets(TOTAL_BUCKETS.to_vec()),
            &["model"],
        )?;
        let open_streams = IntGauge::new(
            "keygate_open_streams",
            "Upstream answers being relayed right now",
        )?;
        let tokens = IntCounterVec::new(
            Opts::new(
                "keygate_tokens_total",
                "Tokens counted by the accounting path (exact or estimated), by model and kind",
            ),
            &["model", "kind"],
        )?;
        let cost = CounterVec::new(
            Opts::new(
                "keygate_cost_usd_total",
                "USD cost counted by the accounting path, by model",
            ),
            &["model"],
        )?;
        let refusals = IntCounterVec::new(
            Opts::new(
                "keygate_limiter_refusals_total",
                "Requests the limiter refused, by reason and by whose limits (the grant's or its model's)",
            ),
            &["reason", "limits"],
        )?;
        let unseals = IntCounterVec::new(
            Opts::new(
                "keygate_vault_unseals_total",
                "Sealed OpenAI keys opened for a request, by whose (the person's vault record \
                 or the operator's key) and result",
            ),
            &["source", "result"],
        )?;
        let operator_key_refusals = IntCounterVec::new(
            Opts::new(
                "keygate_operator_key_refusals_total",
                "Upstream 401/403 answers to requests made with the operator's OpenAI key: \
                 `rejected` (the key itself is refused) or `forbidden` (this call only)",
            ),
            &["verdict"],
        )?;
        let flush = HistogramVec::new(
            HistogramOpts::new(
                "keygate_store_flush_seconds",
                "Time a batching writer takes to write its batch to the store",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["writer"],
        )?;
        let reseal_remaining = IntGauge::new(
            "keygate_reseal_remaining",
            "Sealed records (people's keys and the operator's) still under an older master key, \
             as of the re-seal task's last report",
        )?;
        let resealed = IntCounter::new(
            "keygate_resealed_records_total",
            "Sealed records re-sealed under the active master key since start",
        )?;
        registry.register(Box::new(reseal_remaining.clone()))?;
        registry.register(Box::new(resealed.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(added.clone()))?;
        registry.register(Box::new(upstream_first_byte.clone()))?;
        registry.register(Box::new(upstream_total.clone()))?;
        registry.register(Box::new(open_streams.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(cost.clone()))?;
        registry.register(Box::new(refusals.clone()))?;
        registry.register(Box::new(unseals.clone()))?;
        registry.register(Box::new(operator_key_refusals.clone()))?;
        registry.register(Box::new(flush.clone()))?;
        let this = Self {
            registry,
            requests,
            added,
            upstream_first_byte,
            upstream_total,
            open_streams,
            tokens,
            cost,
            refusals,
            unseals,
            operator_key_refusals,
            flush,
            reseal_remaining,
            resealed,
            models: prices
                .names()
                .chain([OTHER_MODEL])
                .map(str::to_owned)
                .collect(),
        };
        this.preregister();
        Ok(this)
    }

    /// Creates the children requests touch, so the first request of each kind does
    /// not allocate them and every series is present (at 0) from the start.
    fn preregister(&self) {
        for group in GROUPS {
            self.added.with_label_values(&[group]);
            for class in CLASSES {
                self.requests.with_label_values(&[group, class, NO_MODEL]);
            }
        }
        for model in &self.models {
            for class in CLASSES {
                self.requests.with_label_values(&["v1", class, model]);
            }
        }
        for source in [UnsealSource::Vault, UnsealSource::Operator] {
            for result in ["ok", "error"] {
                self.unseals.with_label_values(&[source.label(), result]);
            }
        }
        for verdict in ["rejected", "forbidden"] {
            self.operator_key_refusals.with_label_values(&[verdict]);
        }
        for writer in ["usage", "last_used"] {
            self.flush.with_label_values(&[writer]);
        }
    }

    /// The model label of `model`: its name in the price table, else `other`
    /// (`none` without a model).
    pub fn model_label<'a>(prices: &'a PriceTable, model: Option<&str>) -> &'a str {
        match model {
            None => NO_MODEL,
            Some(m) => prices.priced_name(m).unwrap_or(OTHER_MODEL),
        }
    }

    /// Notes the model label of the request being served, for [`middleware`].
    pub fn note_model(&self, prices: &PriceTable, req: &HttpRequest, model: Option<&str>) {
        let Some(model) = model else { return };
        let label = Self::model_label(prices, Some(model));
        let priced = &self.models[..self.models.len() - 1];
        let at = priced
            .binary_search_by(|m| m.as_str().cmp(label))
            .unwrap_or(priced.len());
        req.extensions_mut().insert(ModelLabel(at));
    }

    pub fn upstream_first_byte(&self, model: &str, took: Duration) {
        self.upstream_first_byte
            .with_label_values(&[model])
            .observe(took.as_secs_f64());
    }

    pub fn upstream_total(&self, model: &str, took: Duration) {
        self.upstream_total
            .with_label_values(&[model])
            .observe(took.as_secs_f64());
    }

    pub fn added(&self, group: &str, took: Duration) {
        self.added
            .with_label_values(&[group])
            .observe(took.as_secs_f64());
    }

    /// The re-seal task's progress (`services::master_keys`).
    pub fn reseal_remaining(&self, remaining: usize) {
        self.reseal_remaining
            .set(i64::try_from(remaining).unwrap_or(i64::MAX));
    }

    pub fn resealed(&self, records: usize) {
        self.resealed.inc_by(records as u64);
    }

    pub fn stream_opened(&self) {
        self.open_streams.inc();
    }

    pub fn stream_closed(&self) {
        self.open_streams.dec();
    }

    /// What the accounting path counted for one request.
    pub fn usage(&self, model: &str, counts: &UsageCounts) {
        if counts.prompt_tokens > 0 {
            self.tokens
                .with_label_values(&[model, "prompt"])
                .inc_by(counts.prompt_tokens);
        }
        if counts.completion_tokens > 0 {
            self.tokens
                .with_label_values(&[model, "completion"])
                .inc_by(counts.completion_tokens);
        }
        if counts.usd_nanos > 0 {
            self.cost
                .with_label_values(&[model])
                .inc_by(counts.usd_nanos as f64 / 1e9);
        }
    }

    /// A refusal by the limiter; `by_model`: the model's limits made it.
    pub fn refused(&self, deny: &Deny, by_model: bool) {
        let reason = match deny {
            Deny::Requests { .. } => "requests",
            Deny::Tokens { .. } | Deny::TokensNeverFit { .. } => "tokens",
            Deny::Concurrency { .. } => "concurrency",
            Deny::Budget { .. } => "budget",
            Deny::ModelNotPriced => "model_not_priced",
        };
        let limits = if by_model { "model" } else { "grant" };
        self.refusals.with_label_values(&[reason, limits]).inc();
    }

    pub fn unsealed(&self, source: UnsealSource, ok: bool) {
        self.unseals
            .with_label_values(&[source.label(), if ok { "ok" } else { "error" }])
            .inc();
    }

    /// OpenAI refused a request made with the operator's key: the key itself
    /// (`rejected: true`) or only this call.
    pub fn operator_key_refused(&self, rejected: bool) {
        self.operator_key_refusals
            .with_label_values(&[if rejected { "rejected" } else { "forbidden" }])
            .inc();
    }

    /// One batch of `writer` took `took`.
    pub fn observe_flush(&self, writer: &str, took: Duration) {
        self.flush
            .with_label_values(&[writer])
            .observe(took.as_secs_f64());
    }

    fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(buf)
    }
}

/// Whose sealed key a request opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsealSource {
    /// The person's own vault record.
    Vault,
    /// The operator's key, lent by the grant's plan (`use_operator_key`).
    Operator,
}

impl UnsealSource {
    fn label(self) -> &'static str {
        match self {
            UnsealSource::Vault => "vault",
            UnsealSource::Operator => "operator",
        }
    }
}

/// The route group of a path.
pub fn group_of(path: &str) -> &'static str {
    let first = path
        .strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .next()
        .unwrap_or_default();
    match first {
        "v1" => "v1",
        "api" => "api",
        "admin" => "admin",
        "connect" => "connect",
        "healthz" | "readyz" | "metrics" => "health",
        _ => "web",
    }
}

fn class_of(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// Counts every answer by group, class and (for `/v1`) model; times keygate's own
/// work outside the proxy (the proxy times its own, less the upstream's).
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let group = group_of(req.path());
    let st = req.app_data::<web::Data<AppState>>().cloned();
    let res = next.call(req).await?;
    if let Some(st) = st {
        let model = res
            .request()
            .extensions()
            .get::<ModelLabel>()
            .and_then(|m| st.metrics.models.get(m.0))
            .map_or(NO_MODEL, String::as_str);
        let class = class_of(res.status().as_u16());
        st.metrics
            .requests
            .with_label_values(&[group, class, model])
            .inc();
        if group != "v1" {
            st.metrics.added(group, start.elapsed());
        }
    }
    Ok(res)
}

/// `GET /metrics`: the text exposition format; with `metrics_token` set, only for a
/// bearer of that token (401 otherwise).
pub async fn serve(req: HttpRequest, st: web::Data<AppState>) -> HttpResponse {
    if let Some(expected) = &st.config.metrics_token {
        let presented = crate::proxy::bearer_token(&req).unwrap_or_default();
        let got: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let want: [u8; 32] = Sha256::digest(expected.expose_secret().as_bytes()).into();
        if !bool::from(got.ct_eq(&want)) {
            return HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish();
        }
    }
    match st.metrics.render() {
        Ok(body) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, prometheus::TEXT_FORMAT))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "could not render metrics");
            HttpResponse::InternalServerError().finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_classes() {
        assert_eq!(group_of("/v1/chat/completions"), "v1");
        assert_eq!(group_of("/api/me"), "api");
        assert_eq!(group_of("/admin/users"), "admin");
        assert_eq!(group_of("/connect/authorize"), "connect");
        assert_eq!(group_of("/healthz"), "health");
        assert_eq!(group_of("/metrics"), "health");
        assert_eq!(group_of("/"), "web");
        assert_eq!(group_of("/v1x"), "web");
        assert_eq!(class_of(204), "2xx");
        assert_eq!(class_of(599), "5xx");
    }

    #[test]
    fn model_labels_are_priced_names_or_other() {
        let prices = PriceTable::builtin();
        assert_eq!(Metrics::model_label(&prices, None), NO_MODEL);
        assert_eq!(Metrics::model_label(&prices, Some("gpt-4o")), "gpt-4o");
        assert_eq!(
            Metrics::model_label(&prices, Some("gpt-4o-2024-08-06")),
            "gpt-4o"
        );
        assert_eq!(
            Metrics::model_label(&prices, Some("usr_secret-ish-name")),
            OTHER_MODEL
        );
        let m = Metrics::new(&prices).unwrap();
        m.usage(
            "gpt-4o",
            &UsageCounts {
                prompt_tokens: 3,
                completion_tokens: 4,
                usd_nanos: 1_000_000_000,
                ..UsageCounts::default()
            },
        );
        let text = String::from_utf8(m.render().unwrap()).unwrap();
        assert!(text.contains(r#"keygate_tokens_total{kind="prompt",model="gpt-4o"} 3"#));
        assert!(text.contains(r#"keygate_cost_usd_total{model="gpt-4o"} 1"#));
    }
}
