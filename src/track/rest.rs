//! The `http(s)://` backend: MLflow REST API 2.0 over ureq (`mlflow server`, AzureML's
//! MLflow endpoint). Owns request building, the answer's JSON shape and the retry policy:
//! every call is bounded (attempts, per-request timeout, capped exponential backoff), and a
//! request that may have reached the server is retried only when repeating it is harmless.
//! It never prints or returns the bearer token.

use super::{
    codes, split_batch, validate_artifact_path, validate_batch, validate_experiment_name,
    validate_key, validate_new_run, ArtifactEntry, Batch, Experiment, LifecycleStage, Metric,
    NewRun, Result, Run, RunFilter, RunInfo, RunStatus, TrackError, Tracker,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const API: &str = "/api/2.0/mlflow";
const ARTIFACTS_API: &str = "/api/2.0/mlflow-artifacts/artifacts";
/// Largest answer read (runs/search pages with many runs are the big ones).
const RESPONSE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// `runs/search` and `metrics/get-history` page size and page bound.
const PAGE_SIZE: u64 = 1000;
const PAGES_MAX: usize = 10_000;

/// Retries and timeouts. Worst case for one call: `attempts_max` × `timeout_ms` plus the
/// backoff sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts_max: u32,
    pub backoff_first_ms: u64,
    pub backoff_max_ms: u64,
    /// Whole request, connect to last byte.
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts_max: 4,
            backoff_first_ms: 250,
            backoff_max_ms: 4_000,
            timeout_ms: 30_000,
            connect_timeout_ms: 5_000,
        }
    }
}

impl RetryPolicy {
    /// The sleep before retry number `retry` (1 = the first retry): first × 2^(retry−1),
    /// capped.
    pub fn backoff_ms(&self, retry: u32) -> u64 {
        let doublings = retry.saturating_sub(1).min(32);
        self.backoff_first_ms
            .saturating_mul(1u64 << doublings)
            .min(self.backoff_max_ms)
    }
}

/// Whether repeating a request that may have reached the server is harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Repeat {
    /// Reads, updates, log-batch (params are write-once with the same value, metric points
    /// are keyed by (key, timestamp, step, value)), experiments/create (a repeat answers
    /// RESOURCE_ALREADY_EXISTS, which get-or-create resolves).
    Harmless,
    /// runs/create: the server makes a new run per request and offers no idempotency key,
    /// so it is retried only when the connection was never made.
    OnlyIfNotSent,
}

enum Method {
    Get,
    Post,
    Put,
}

enum Outcome {
    Done(Value),
    /// Failed; `sent` says whether the request may have reached the server.
    Retryable {
        error: TrackError,
        sent: bool,
    },
}

pub struct RestTracker {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    retry: RetryPolicy,
}

impl RestTracker {
    /// `base_url` is the tracking URI (`http://host:port[/prefix]`); the API paths are
    /// appended to it. `token` is sent as `Authorization: Bearer`.
    pub fn new(base_url: &str, token: Option<String>, retry: RetryPolicy) -> Result<RestTracker> {
        let base = validate_base_url(base_url)?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(retry.timeout_ms)))
            .timeout_connect(Some(Duration::from_millis(retry.connect_timeout_ms)))
            .max_redirects(3)
            .user_agent(concat!("trainctl/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(RestTracker {
            base,
            token: token.filter(|t| !t.is_empty()),
            agent: ureq::Agent::new_with_config(config),
            retry,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn api(
        &self,
        method: Method,
        route: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        repeat: Repeat,
    ) -> Result<Value> {
        let url = format!("{}{API}/{route}", self.base);
        let bytes = body.map(|b| b.to_string().into_bytes());
        self.call(
            &method,
            &url,
            query,
            bytes.as_deref(),
            "application/json",
            repeat,
        )
    }

    /// One logical call with the retry policy applied. Bounded by `attempts_max`.
    fn call(
        &self,
        method: &Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<&[u8]>,
        content_type: &str,
        repeat: Repeat,
    ) -> Result<Value> {
        let attempts_max = self.retry.attempts_max.max(1);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let outcome = self.attempt(method, url, query, body, content_type, attempt)?;
            let (error, sent) = match outcome {
                Outcome::Done(value) => return Ok(value),
                Outcome::Retryable { error, sent } => (error, sent),
            };
            let may_repeat = !sent || repeat == Repeat::Harmless;
            if attempt >= attempts_max || !may_repeat {
                return Err(error);
            }
            std::thread::sleep(Duration::from_millis(self.retry.backoff_ms(attempt)));
        }
    }

    fn attempt(
        &self,
        method: &Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<&[u8]>,
        content_type: &str,
        attempt: u32,
    ) -> Result<Outcome> {
        let sent = self.send(method, url, query, body, content_type);
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return Ok(self.transport_failure(e, attempt)),
        };
        let status = response.status().as_u16();
        let text = match response
            .body_mut()
            .with_config()
            .limit(RESPONSE_BYTES_MAX)
            .read_to_string()
        {
            Ok(text) => text,
            Err(e) => return Ok(self.transport_failure(e, attempt)),
        };
        self.answer(url, status, &text, attempt)
    }

    /// Sends one request, with the bearer token when there is one.
    fn send(
        &self,
        method: &Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<&[u8]>,
        content_type: &str,
    ) -> std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        match method {
            Method::Get => {
                let mut req = self.agent.get(url);
                for (k, v) in query {
                    req = req.query(*k, *v);
                }
                if let Some(auth) = &auth {
                    req = req.header("Authorization", auth);
                }
                req.call()
            }
            Method::Post | Method::Put => {
                let mut req = match method {
                    Method::Put => self.agent.put(url),
                    _ => self.agent.post(url),
                };
                for (k, v) in query {
                    req = req.query(*k, *v);
                }
                if let Some(auth) = &auth {
                    req = req.header("Authorization", auth);
                }
                req.header("Content-Type", content_type)
                    .send(body.unwrap_or_default())
            }
        }
    }

    /// What a response with `status` and body `text` means: the JSON of a 2xx, a retryable
    /// server error (429, 5xx), or the server's rejection.
    fn answer(&self, url: &str, status: u16, text: &str, attempt: u32) -> Result<Outcome> {
        let parsed: Option<Value> = if text.trim().is_empty() {
            Some(json!({}))
        } else {
            serde_json::from_str(text).ok()
        };
        if (200..300).contains(&status) {
            return parsed
                .map(Outcome::Done)
                .ok_or_else(|| TrackError::Malformed {
                    what: redact_url(url),
                    detail: format!(
                        "HTTP {status} with a body that is not JSON: {}",
                        snippet(text)
                    ),
                });
        }
        let code = parsed
            .as_ref()
            .and_then(|v| v.get("error_code"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP_{status}"));
        let message = parsed
            .as_ref()
            .and_then(|v| v.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| snippet(text));
        // 429 and 5xx are the server's trouble and may pass; any other status is an answer.
        if status == 429 || status >= 500 {
            return Ok(Outcome::Retryable {
                error: TrackError::Server {
                    target: self.base.clone(),
                    status,
                    code,
                    message,
                    attempts: attempt,
                },
                sent: true,
            });
        }
        Err(TrackError::Rejected {
            code,
            status: Some(status),
            message,
        })
    }

    fn transport_failure(&self, e: ureq::Error, attempt: u32) -> Outcome {
        let target = self.base.clone();
        let detail = e.to_string();
        match &e {
            ureq::Error::Timeout(_) => Outcome::Retryable {
                error: TrackError::Timeout {
                    target,
                    attempts: attempt,
                    detail,
                },
                sent: true,
            },
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                Outcome::Retryable {
                    error: TrackError::Timeout {
                        target,
                        attempts: attempt,
                        detail,
                    },
                    sent: true,
                }
            }
            // The connection was never made: nothing reached the server.
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => Outcome::Retryable {
                error: TrackError::Unreachable {
                    target,
                    attempts: attempt,
                    detail,
                },
                sent: false,
            },
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                Outcome::Retryable {
                    error: TrackError::Unreachable {
                        target,
                        attempts: attempt,
                        detail,
                    },
                    sent: false,
                }
            }
            _ => Outcome::Retryable {
                error: TrackError::Unreachable {
                    target,
                    attempts: attempt,
                    detail,
                },
                sent: true,
            },
        }
    }

    /// Where a run's artifacts are uploaded through the server's artifact proxy:
    /// `mlflow-artifacts:/<path>` (or `mlflow-artifacts://host/<path>`) → `<path>`.
    /// The path below the server's artifact proxy of a run's `mlflow-artifacts:` root.
    fn proxied_artifact_root(uri: &str) -> Result<String> {
        let rest = uri.strip_prefix("mlflow-artifacts:").ok_or_else(|| TrackError::Unsupported {
            what: "artifact upload".into(),
            detail: format!(
                "run artifact root `{uri}` is neither served by the tracking server nor a local directory (a bucket needs its own client; the run is finished without these artifacts)"
            ),
        })?;
        let path = match rest.strip_prefix("//") {
            // `//host:port/path`: same server by construction of the URI; keep the path.
            Some(authority_and_path) => authority_and_path
                .split_once('/')
                .map(|(_, p)| p)
                .unwrap_or(""),
            None => rest,
        };
        Ok(path.trim_matches('/').to_string())
    }
}

/// The directory of a run's artifact root when it is a local path (`/…` or `file:///…`), as
/// `mlflow server --default-artifact-root DIR` gives on the machine it runs on.
fn local_artifact_dir(uri: &str) -> Option<std::path::PathBuf> {
    let path = match uri.strip_prefix("file://") {
        Some(rest) => rest,
        None if uri.starts_with('/') => uri,
        None => return None,
    };
    let path = std::path::Path::new(path);
    // `<DIR>/<experiment>/<run>/artifacts`: DIR must exist here, or the server's directory
    // is on another machine and writing it here would only leave junk.
    let served_here = path.ancestors().nth(3).is_some_and(|dir| dir.is_dir());
    (path.is_absolute() && served_here).then(|| path.to_path_buf())
}

pub(crate) fn validate_base_url(raw: &str) -> Result<String> {
    let malformed = |reason: &str| TrackError::MalformedUri {
        uri: redact_url(raw),
        reason: reason.to_string(),
    };
    let rest = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"))
        .ok_or_else(|| malformed("expected http:// or https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(malformed("no host"));
    }
    if let Some((_, port)) = host.rsplit_once(':').filter(|_| !host.ends_with(']')) {
        if port.parse::<u16>().is_err() {
            return Err(malformed("the port is not a number in 1..65535"));
        }
    }
    if raw.contains(['?', '#']) || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(malformed("no query, fragment or whitespace allowed"));
    }
    let base = raw.trim_end_matches('/').to_string();
    // ureq must accept it too (anything else it rejects is also malformed for us).
    if base.parse::<ureq::http::Uri>().is_err() {
        return Err(malformed("not a valid URL"));
    }
    Ok(base)
}

/// The URL without `user:password@`, for messages.
fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{path}"),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

fn snippet(text: &str) -> String {
    let mut out: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        out.push('…');
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn key_values(map: &BTreeMap<String, String>) -> Value {
    Value::Array(
        map.iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect(),
    )
}

/// NaN and ±inf are not JSON numbers; the server accepts them as strings.
fn metric_value_json(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v.is_infinite() {
        json!(if v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(v)
    }
}

fn malformed_answer(what: &str, detail: impl Into<String>) -> TrackError {
    TrackError::Malformed {
        what: what.into(),
        detail: detail.into(),
    }
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int_field(v: &Value, key: &str) -> Option<i64> {
    match v.get(key)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn float_field(v: &Value, key: &str) -> Option<f64> {
    match v.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            other => other.parse().ok(),
        },
        _ => None,
    }
}

/// Parses a response body as the client would read the answer of a `get` of an experiment, a
/// run, or a search of runs (the fuzz target `mlflow_response`, `crate::fuzzing`). An error is
/// a typed `TrackError` naming what was malformed.
pub fn parse_answer(text: &str) -> Result<()> {
    let v: Value = serde_json::from_str(text).map_err(|e| TrackError::Malformed {
        what: "response".into(),
        detail: format!("not JSON: {e}"),
    })?;
    if let Some(e) = v.get("experiment") {
        parse_experiment(e)?;
    }
    if let Some(r) = v.get("run") {
        parse_run(r)?;
    }
    for r in v
        .get("runs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        parse_run(r)?;
    }
    for m in v
        .get("metrics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        parse_metric(m)?;
    }
    Ok(())
}

fn parse_experiment(v: &Value) -> Result<Experiment> {
    let what = "experiment";
    Ok(Experiment {
        experiment_id: str_field(v, "experiment_id")
            .ok_or_else(|| malformed_answer(what, "no experiment_id"))?,
        name: str_field(v, "name").ok_or_else(|| malformed_answer(what, "no name"))?,
        artifact_location: str_field(v, "artifact_location").unwrap_or_default(),
        lifecycle_stage: str_field(v, "lifecycle_stage")
            .and_then(|s| LifecycleStage::parse(&s))
            .unwrap_or(LifecycleStage::Active),
    })
}

fn parse_run_info(v: &Value) -> Result<RunInfo> {
    let what = "run info";
    let status = str_field(v, "status").unwrap_or_default();
    Ok(RunInfo {
        run_id: str_field(v, "run_id")
            .or_else(|| str_field(v, "run_uuid"))
            .ok_or_else(|| malformed_answer(what, "no run_id"))?,
        experiment_id: str_field(v, "experiment_id")
            .ok_or_else(|| malformed_answer(what, "no experiment_id"))?,
        run_name: str_field(v, "run_name").unwrap_or_default(),
        status: RunStatus::parse(&status)
            .ok_or_else(|| malformed_answer(what, format!("status `{status}`")))?,
        start_time_ms: int_field(v, "start_time").unwrap_or(0),
        end_time_ms: int_field(v, "end_time"),
        artifact_uri: str_field(v, "artifact_uri").unwrap_or_default(),
        lifecycle_stage: str_field(v, "lifecycle_stage")
            .and_then(|s| LifecycleStage::parse(&s))
            .unwrap_or(LifecycleStage::Active),
    })
}

fn parse_metric(v: &Value) -> Result<Metric> {
    let what = "metric";
    Ok(Metric {
        key: str_field(v, "key").ok_or_else(|| malformed_answer(what, "no key"))?,
        value: float_field(v, "value").ok_or_else(|| malformed_answer(what, "no value"))?,
        timestamp_ms: int_field(v, "timestamp").unwrap_or(0),
        step: int_field(v, "step").unwrap_or(0),
    })
}

fn parse_key_values(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|kv| {
                    Some((
                        str_field(kv, "key")?,
                        str_field(kv, "value").unwrap_or_default(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn parse_run(v: &Value) -> Result<Run> {
    let info = parse_run_info(
        v.get("info")
            .ok_or_else(|| malformed_answer("run", "no info"))?,
    )?;
    let data = v.get("data");
    let mut metrics = BTreeMap::new();
    if let Some(items) = data
        .and_then(|d| d.get("metrics"))
        .and_then(Value::as_array)
    {
        for item in items {
            let m = parse_metric(item)?;
            metrics.insert(m.key.clone(), m);
        }
    }
    Ok(Run {
        info,
        params: parse_key_values(data.and_then(|d| d.get("params"))),
        tags: parse_key_values(data.and_then(|d| d.get("tags"))),
        metrics,
    })
}

/// A filter-string literal for `value`, or `None` when it holds both quote kinds (the
/// clause is then left to the client-side filter).
fn filter_literal(value: &str) -> Option<String> {
    if !value.contains('\'') {
        Some(format!("'{value}'"))
    } else if !value.contains('"') {
        Some(format!("\"{value}\""))
    } else {
        None
    }
}

fn filter_string(filter: &RunFilter) -> String {
    let mut clauses = Vec::new();
    for (key, value) in &filter.tags {
        // Keys are validated to MLflow's alphabet, which has no backtick.
        if let Some(lit) = filter_literal(value) {
            clauses.push(format!("tags.`{key}` = {lit}"));
        }
    }
    if let Some(lit) = filter.run_name.as_deref().and_then(filter_literal) {
        clauses.push(format!("attributes.run_name = {lit}"));
    }
    clauses.join(" and ")
}

impl Tracker for RestTracker {
    fn describe(&self) -> String {
        redact_url(&self.base)
    }

    fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>> {
        let answer = self.api(
            Method::Get,
            "experiments/get-by-name",
            &[("experiment_name", name)],
            None,
            Repeat::Harmless,
        );
        match answer {
            Ok(v) => {
                let experiment = v
                    .get("experiment")
                    .ok_or_else(|| malformed_answer("get-by-name", "no experiment"))?;
                parse_experiment(experiment).map(Some)
            }
            Err(e) if e.code() == Some(codes::RESOURCE_DOES_NOT_EXIST) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn create_experiment(&self, name: &str) -> Result<String> {
        validate_experiment_name(name)?;
        let v = self.api(
            Method::Post,
            "experiments/create",
            &[],
            Some(&json!({ "name": name })),
            Repeat::Harmless,
        )?;
        str_field(&v, "experiment_id")
            .ok_or_else(|| malformed_answer("experiments/create", "no experiment_id"))
    }

    fn create_run(&self, run: &NewRun) -> Result<RunInfo> {
        validate_new_run(run)?;
        let body = json!({
            "experiment_id": run.experiment_id,
            "run_name": run.run_name,
            "start_time": run.start_time_ms,
            "tags": key_values(&run.tags),
        });
        let v = self.api(
            Method::Post,
            "runs/create",
            &[],
            Some(&body),
            Repeat::OnlyIfNotSent,
        )?;
        let run = v
            .get("run")
            .ok_or_else(|| malformed_answer("runs/create", "no run"))?;
        parse_run_info(
            run.get("info")
                .ok_or_else(|| malformed_answer("runs/create", "no info"))?,
        )
    }

    fn get_run(&self, run_id: &str) -> Result<Run> {
        let v = self.api(
            Method::Get,
            "runs/get",
            &[("run_id", run_id)],
            None,
            Repeat::Harmless,
        )?;
        parse_run(
            v.get("run")
                .ok_or_else(|| malformed_answer("runs/get", "no run"))?,
        )
    }

    fn update_run(
        &self,
        run_id: &str,
        status: RunStatus,
        end_time_ms: Option<i64>,
    ) -> Result<RunInfo> {
        let mut body = json!({ "run_id": run_id, "status": status.as_str() });
        if let Some(end) = end_time_ms {
            body["end_time"] = json!(end);
        }
        let v = self.api(
            Method::Post,
            "runs/update",
            &[],
            Some(&body),
            Repeat::Harmless,
        )?;
        parse_run_info(
            v.get("run_info")
                .ok_or_else(|| malformed_answer("runs/update", "no run_info"))?,
        )
    }

    fn log_batch(&self, run_id: &str, batch: &Batch) -> Result<()> {
        validate_batch(batch)?;
        for piece in split_batch(batch) {
            let metrics: Vec<Value> = piece
                .metrics
                .iter()
                .map(|m| json!({"key": m.key, "value": metric_value_json(m.value), "timestamp": m.timestamp_ms, "step": m.step}))
                .collect();
            let body = json!({
                "run_id": run_id,
                "params": key_values(&piece.params),
                "metrics": metrics,
                "tags": key_values(&piece.tags),
            });
            self.api(
                Method::Post,
                "runs/log-batch",
                &[],
                Some(&body),
                Repeat::Harmless,
            )?;
        }
        Ok(())
    }

    fn log_artifact(&self, run_id: &str, local_file: &Path, artifact_path: &str) -> Result<()> {
        validate_artifact_path(artifact_path)?;
        let uri = self.get_run(run_id)?.info.artifact_uri;
        // Through the command's Fs router: with OUT in a bucket the artifact is an object.
        let bytes = crate::fs::Fs::read(&crate::store::cloud::CloudFs::new(), local_file)
            .map_err(|e| TrackError::store(local_file, e))?;
        // A server without the artifact proxy (`--default-artifact-root DIR`) gives runs a
        // plain directory root: like MLflow's own client, write the artifact there.
        if let Some(root) = local_artifact_dir(&uri) {
            let dest = root.join(artifact_path);
            let fs = crate::fs::OsFs;
            if let Some(parent) = dest.parent() {
                crate::fs::ensure_dir(&fs, parent).map_err(|e| TrackError::store(parent, e))?;
            }
            return crate::fs::write_atomic(&fs, &dest, &bytes)
                .map_err(|e| TrackError::store(&dest, e));
        }
        let root = Self::proxied_artifact_root(&uri)?;
        let url = format!(
            "{}{ARTIFACTS_API}/{}/{}",
            self.base,
            super::percent_encode_path(&root),
            super::percent_encode_path(artifact_path)
        );
        self.call(
            &Method::Put,
            &url,
            &[],
            Some(&bytes),
            "application/octet-stream",
            Repeat::Harmless,
        )?;
        Ok(())
    }

    fn list_artifacts(&self, run_id: &str, dir: &str) -> Result<Vec<ArtifactEntry>> {
        let dir = dir.trim_matches('/');
        let mut query = vec![("run_id", run_id)];
        if !dir.is_empty() {
            validate_artifact_path(dir)?;
            query.push(("path", dir));
        }
        let v = self.api(
            Method::Get,
            "artifacts/list",
            &query,
            None,
            Repeat::Harmless,
        )?;
        let mut out: Vec<ArtifactEntry> = v
            .get("files")
            .and_then(Value::as_array)
            .map(|files| {
                files
                    .iter()
                    .filter_map(|f| {
                        Some(ArtifactEntry {
                            path: str_field(f, "path")?,
                            is_dir: f.get("is_dir").and_then(Value::as_bool).unwrap_or(false),
                            size: int_field(f, "file_size").and_then(|s| u64::try_from(s).ok()),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        Ok(out)
    }

    fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>> {
        validate_key("metric", key)?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let page_size = PAGE_SIZE.to_string();
        for _ in 0..PAGES_MAX {
            let mut query = vec![
                ("run_id", run_id),
                ("metric_key", key),
                ("max_results", page_size.as_str()),
            ];
            if let Some(t) = &token {
                query.push(("page_token", t));
            }
            let v = self.api(
                Method::Get,
                "metrics/get-history",
                &query,
                None,
                Repeat::Harmless,
            )?;
            for item in v
                .get("metrics")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.push(parse_metric(item)?);
            }
            token = str_field(&v, "next_page_token").filter(|t| !t.is_empty());
            if token.is_none() {
                return Ok(out);
            }
        }
        Err(malformed_answer(
            "metrics/get-history",
            format!("more than {PAGES_MAX} pages"),
        ))
    }

    fn search_runs(&self, experiment_id: &str, filter: &RunFilter) -> Result<Vec<Run>> {
        for key in filter.tags.keys() {
            validate_key("tag", key)?;
        }
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..PAGES_MAX {
            let mut body = json!({
                "experiment_ids": [experiment_id],
                "filter": filter_string(filter),
                "max_results": PAGE_SIZE,
                "run_view_type": "ACTIVE_ONLY",
            });
            if let Some(t) = &token {
                body["page_token"] = json!(t);
            }
            let v = self.api(
                Method::Post,
                "runs/search",
                &[],
                Some(&body),
                Repeat::Harmless,
            )?;
            for item in v
                .get("runs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let run = parse_run(item)?;
                // The server filtered already; this also covers clauses it could not be sent.
                if filter.matches(&run) {
                    out.push(run);
                }
            }
            token = str_field(&v, "next_page_token").filter(|t| !t.is_empty());
            if token.is_none() {
                return Ok(out);
            }
        }
        Err(malformed_answer(
            "runs/search",
            format!("more than {PAGES_MAX} pages"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            attempts_max: 10,
            backoff_first_ms: 100,
            backoff_max_ms: 1000,
            timeout_ms: 1,
            connect_timeout_ms: 1,
        };
        let sleeps: Vec<u64> = (1..=6).map(|r| p.backoff_ms(r)).collect();
        assert_eq!(sleeps, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff_ms(u32::MAX), 1000);
    }

    #[test]
    fn base_urls_are_checked_not_panicked_on() {
        for good in [
            "http://127.0.0.1:5000",
            "https://host/prefix/",
            "http://[::1]:8080",
        ] {
            assert!(validate_base_url(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "http://",
            "ftp://x",
            "http://:80",
            "http://h:99999",
            "http://h:x",
            "http://h/a b",
            "http://h/?q=1",
            "http://h\n",
        ] {
            let err = validate_base_url(bad).expect_err(bad);
            assert_eq!(err.kind(), "malformed_uri", "{bad}");
        }
        assert_eq!(validate_base_url("http://h:1/x/").unwrap(), "http://h:1/x");
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(redact_url("https://u:secret@host/p"), "https://***@host/p");
        assert_eq!(redact_url("http://host:5000"), "http://host:5000");
        let err = validate_base_url("ftp://u:secret@host").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn filter_strings_quote_values_and_backquote_keys() {
        let mut filter = RunFilter::default();
        filter.tags.insert("trainctl.variant".into(), "v1".into());
        filter.tags.insert("quote".into(), "it's".into());
        filter.tags.insert("both".into(), "'\"".into());
        filter.run_name = Some("run-1".into());
        assert_eq!(
            filter_string(&filter),
            "tags.`quote` = \"it's\" and tags.`trainctl.variant` = 'v1' and attributes.run_name = 'run-1'"
        );
    }

    #[test]
    fn non_finite_metric_values_survive_json() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.5] {
            let doc = json!({"key": "m", "value": metric_value_json(v), "timestamp": 1, "step": 2});
            let back = parse_metric(&doc).unwrap();
            assert!(
                back.value == v || (v.is_nan() && back.value.is_nan()),
                "{v}"
            );
        }
    }
}
