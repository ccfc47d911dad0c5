//! Which tracking backend a command uses (docs/contract.md, "Tracking of final training"): a pure
//! function of the configuration (`mlflow.yaml` `tracking.*`, `azure_ml.*`) and the environment
//! (`MLFLOW_TRACKING_URI`, `MLFLOW_TRACKING_TOKEN`), returning the choice and the warnings to show.
//! It reads no process state itself (`TrackingEnv::from_process` is the one place that does), so
//! the precedence is unit-tested without touching the environment.
//!
//! Precedence: stage disabled → disabled; `MLFLOW_TRACKING_URI` (as in MLflow); AzureML when
//! `azure_ml.enabled` (missing settings or token: warning, then the default file store);
//! `tracking.uri`; the default `file:<ROOT>/mlruns`.

use super::file::FileTracker;
use super::rest::{validate_base_url, RestTracker, RetryPolicy};
use super::{DisabledTracker, Result, TrackError, Tracker};
use crate::fs::Fs;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const ENV_TRACKING_URI: &str = "MLFLOW_TRACKING_URI";
/// MLflow's own variable for a bearer token; AzureML needs one (e.g. from
/// `az account get-access-token --resource https://ml.azure.com`).
pub const ENV_TRACKING_TOKEN: &str = "MLFLOW_TRACKING_TOKEN";

/// `mlflow.yaml azure_ml.*`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AzureSettings {
    pub enabled: bool,
    pub subscription_id: Option<String>,
    pub resource_group: Option<String>,
    pub workspace_name: Option<String>,
    pub region: Option<String>,
}

/// The configuration side of the choice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackingSettings {
    /// ROOT: the default store is `file:<ROOT>/mlruns`, and a relative `tracking.uri` path
    /// is relative to it.
    pub root: PathBuf,
    /// `tracking.<stage>.enabled`.
    pub enabled: bool,
    /// `tracking.uri` (`None` or empty = default).
    pub uri: Option<String>,
    pub azure: AzureSettings,
}

/// The environment side. A relative path in `MLFLOW_TRACKING_URI` is relative to `cwd`, as
/// it is for MLflow's own tools run in the same shell.
#[derive(Clone, PartialEq, Eq)]
pub struct TrackingEnv {
    pub tracking_uri: Option<String>,
    pub token: Option<Secret>,
    pub cwd: PathBuf,
}

impl TrackingEnv {
    pub fn from_process() -> TrackingEnv {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        TrackingEnv {
            tracking_uri: var(ENV_TRACKING_URI),
            token: var(ENV_TRACKING_TOKEN).map(Secret),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        }
    }
}

impl fmt::Debug for TrackingEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackingEnv")
            .field("tracking_uri", &self.tracking_uri)
            .field("token", &self.token)
            .field("cwd", &self.cwd)
            .finish()
    }
}

/// A credential: shown as `***` by Debug, never part of a message.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    Disabled,
    File { root: PathBuf },
    Rest { url: String, token: Option<Secret> },
}

impl BackendChoice {
    /// For messages and metadata; no credentials.
    pub fn describe(&self) -> String {
        match self {
            BackendChoice::Disabled => "disabled".into(),
            BackendChoice::File { root } => format!("file:{}", root.display()),
            BackendChoice::Rest { url, .. } => url.clone(),
        }
    }
}

/// Where the choice came from (recorded with the tracking state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriSource {
    StageDisabled,
    Environment,
    AzureMl,
    Config,
    Default,
    /// AzureML was enabled but unusable; the default file store is used instead.
    AzureMlFallback,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub choice: BackendChoice,
    pub source: UriSource,
    pub warnings: Vec<String>,
}

/// The default store of a project.
pub fn default_file_root(root: &Path) -> PathBuf {
    root.join("mlruns")
}

/// AzureML's MLflow tracking URI for a workspace (the `azureml://` form MLflow's AzureML
/// plugin uses; REST calls go to the same host and path over https).
pub fn azureml_tracking_uri(
    subscription_id: &str,
    resource_group: &str,
    workspace_name: &str,
    region: &str,
) -> String {
    format!(
        "azureml://{region}.api.azureml.ms/mlflow/v1.0/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/Microsoft.MachineLearningServices/workspaces/{workspace_name}"
    )
}

/// The backend one stage uses, by the precedence in the module doc.
pub fn select_backend(settings: &TrackingSettings, env: &TrackingEnv) -> Result<Selection> {
    if !settings.enabled {
        return Ok(Selection {
            choice: BackendChoice::Disabled,
            source: UriSource::StageDisabled,
            warnings: Vec::new(),
        });
    }
    let default = BackendChoice::File {
        root: default_file_root(&settings.root),
    };
    if let Some(uri) = env.tracking_uri.as_deref().filter(|u| !u.trim().is_empty()) {
        let from = UriFrom {
            uri,
            relative_to: &env.cwd,
            source: UriSource::Environment,
            named: ENV_TRACKING_URI,
        };
        return from_uri(&from, env.token.as_ref(), default);
    }
    if settings.azure.enabled {
        return from_azure(&settings.azure, env.token.as_ref(), default);
    }
    if let Some(uri) = settings.uri.as_deref().filter(|u| !u.trim().is_empty()) {
        let from = UriFrom {
            uri,
            relative_to: &settings.root,
            source: UriSource::Config,
            named: "tracking.uri",
        };
        return from_uri(&from, env.token.as_ref(), default);
    }
    Ok(Selection {
        choice: default,
        source: UriSource::Default,
        warnings: Vec::new(),
    })
}

/// A tracking URI and where it was set.
struct UriFrom<'a> {
    uri: &'a str,
    /// What a relative path in it is relative to.
    relative_to: &'a Path,
    source: UriSource,
    /// How warnings name its setting.
    named: &'a str,
}

/// The backend a tracking URI names; an AzureML URI without a token falls back to
/// `default`, with a warning.
fn from_uri(
    from: &UriFrom<'_>,
    token: Option<&Secret>,
    default: BackendChoice,
) -> Result<Selection> {
    match parse_tracking_uri(from.uri, from.relative_to, token)? {
        Parsed::Choice(choice) => Ok(Selection {
            choice,
            source: from.source,
            warnings: Vec::new(),
        }),
        Parsed::AzureWithoutToken => {
            let warning = format!(
                "{} is an AzureML URI but {ENV_TRACKING_TOKEN} is not set; tracking to {} instead",
                from.named,
                default.describe()
            );
            Ok(Selection {
                choice: default,
                source: UriSource::AzureMlFallback,
                warnings: vec![warning],
            })
        }
    }
}

/// The AzureML backend of `azure_ml.*` (enabled); missing settings or no token fall back to
/// `default`, with a warning naming what is missing.
fn from_azure(
    azure: &AzureSettings,
    token: Option<&Secret>,
    default: BackendChoice,
) -> Result<Selection> {
    let field = |name: &'static str, v: &Option<String>| match v.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(name),
    };
    let fields = [
        field("subscription_id", &azure.subscription_id),
        field("resource_group", &azure.resource_group),
        field("workspace_name", &azure.workspace_name),
        field("region", &azure.region),
    ];
    let missing: Vec<&str> = fields
        .iter()
        .filter_map(|f| f.as_ref().err().copied())
        .collect();
    let usable = match (&fields, token) {
        ([Ok(sub), Ok(rg), Ok(ws), Ok(region)], Some(token)) if missing.is_empty() => {
            check_azure_names(sub, rg, ws, region)?;
            let uri = azureml_tracking_uri(sub, rg, ws, region);
            Some(azure_rest(&uri, token.clone())?)
        }
        _ => None,
    };
    if let Some(choice) = usable {
        return Ok(Selection {
            choice,
            source: UriSource::AzureMl,
            warnings: Vec::new(),
        });
    }
    let reason = if missing.is_empty() {
        format!("no bearer token in {ENV_TRACKING_TOKEN}")
    } else {
        format!(
            "mlflow.yaml azure_ml.{} not set",
            missing.join(", azure_ml.")
        )
    };
    let warning = format!(
        "azure_ml.enabled is true but {reason}; tracking to {} instead",
        default.describe()
    );
    Ok(Selection {
        choice: default,
        source: UriSource::AzureMlFallback,
        warnings: vec![warning],
    })
}

/// The AzureML names go into the tracking URI's path: only characters an Azure resource
/// name can have are accepted.
fn check_azure_names(sub: &str, rg: &str, ws: &str, region: &str) -> Result<()> {
    for (name, value) in [
        ("subscription_id", sub),
        ("resource_group", rg),
        ("workspace_name", ws),
        ("region", region),
    ] {
        let ok = value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'));
        if !ok {
            return Err(TrackError::MalformedUri {
                uri: format!("mlflow.yaml azure_ml.{name}"),
                reason: format!("`{value}` has characters an Azure resource name cannot have"),
            });
        }
    }
    Ok(())
}

enum Parsed {
    Choice(BackendChoice),
    AzureWithoutToken,
}

fn azure_rest(azureml_uri: &str, token: Secret) -> Result<BackendChoice> {
    let rest = azureml_uri
        .strip_prefix("azureml://")
        .unwrap_or(azureml_uri);
    let url = validate_base_url(&format!("https://{rest}"))?;
    Ok(BackendChoice::Rest {
        url,
        token: Some(token),
    })
}

/// Parses a tracking URI: `file:` (`file:/abs`, `file:///abs`, `file://localhost/abs`,
/// `file:rel`), a plain path, `http(s)://`, `azureml://`. Relative paths resolve against
/// `relative_to`. Anything else (`sqlite:`, `databricks`, …) is `MalformedUri`, never a panic.
fn parse_tracking_uri(uri: &str, relative_to: &Path, token: Option<&Secret>) -> Result<Parsed> {
    let malformed = |reason: &str| TrackError::MalformedUri {
        uri: uri.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = uri.trim();
    if trimmed.chars().any(|c| c == '\0' || c == '\n' || c == '\r') {
        return Err(malformed("contains a NUL or line break"));
    }
    let scheme = scheme_of(trimmed);
    match scheme.as_deref() {
        None => Ok(Parsed::Choice(BackendChoice::File {
            root: local_root(trimmed, relative_to).map_err(|r| malformed(&r))?,
        })),
        Some("file") => {
            let rest = &trimmed["file:".len()..];
            let path = match rest.strip_prefix("//") {
                Some(after) => {
                    let (host, path) = match after.find('/') {
                        Some(i) => after.split_at(i),
                        None => (after, ""),
                    };
                    if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) {
                        return Err(malformed("file URIs on another host are not supported"));
                    }
                    path
                }
                None => rest,
            };
            let decoded = percent_decode(path).ok_or_else(|| malformed("bad percent-encoding"))?;
            Ok(Parsed::Choice(BackendChoice::File {
                root: local_root(&decoded, relative_to).map_err(|r| malformed(&r))?,
            }))
        }
        Some("http") | Some("https") => Ok(Parsed::Choice(BackendChoice::Rest {
            url: validate_base_url(trimmed)?,
            token: token.cloned(),
        })),
        Some("azureml") => match token {
            Some(token) => Ok(Parsed::Choice(azure_rest(trimmed, token.clone())?)),
            None => Ok(Parsed::AzureWithoutToken),
        },
        Some(other) => Err(malformed(&format!(
            "unsupported scheme `{other}:`; trainctl tracks to file:, http://, https:// or azureml:// URIs"
        ))),
    }
}

/// `scheme` of `scheme:rest` when `uri` has one (RFC 3986 letters; a `/` before the colon
/// means a path).
fn scheme_of(uri: &str) -> Option<String> {
    let (head, _) = uri.split_once(':')?;
    let mut chars = head.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then(|| head.to_ascii_lowercase())
}

fn local_root(path: &str, relative_to: &Path) -> std::result::Result<PathBuf, String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    let p = Path::new(path);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        relative_to.join(p)
    };
    if !joined.is_absolute() {
        return Err(format!(
            "`{}` does not resolve to an absolute path",
            joined.display()
        ));
    }
    Ok(joined)
}

pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).ok()?;
    (!text.contains('\0')).then_some(text)
}

/// Builds the tracker for a choice.
pub fn open(
    choice: &BackendChoice,
    fs: Arc<dyn Fs>,
    retry: RetryPolicy,
) -> Result<Box<dyn Tracker>> {
    match choice {
        BackendChoice::Disabled => Ok(Box::new(DisabledTracker)),
        BackendChoice::File { root } => Ok(Box::new(FileTracker::new(fs, root.clone())?)),
        BackendChoice::Rest { url, token } => Ok(Box::new(RestTracker::new(
            url,
            token.as_ref().map(|t| t.0.clone()),
            retry,
        )?)),
    }
}

#[cfg(test)]
#[path = "select_tests.rs"]
mod tests;
