//! Backend selection: one table of (settings, environment) → (choice, source, warnings).

use super::*;
use proptest::prelude::*;

fn settings() -> TrackingSettings {
    TrackingSettings {
        root: PathBuf::from("/proj"),
        enabled: true,
        uri: None,
        azure: AzureSettings::default(),
    }
}

fn env(uri: Option<&str>, token: Option<&str>) -> TrackingEnv {
    TrackingEnv {
        tracking_uri: uri.map(str::to_string),
        token: token.map(|t| Secret(t.to_string())),
        cwd: PathBuf::from("/cwd"),
    }
}

fn azure_complete() -> AzureSettings {
    AzureSettings {
        enabled: true,
        subscription_id: Some("0000-sub".into()),
        resource_group: Some("rg-ml".into()),
        workspace_name: Some("resume-ner-ws".into()),
        region: Some("westeurope".into()),
    }
}

fn file(root: &str) -> BackendChoice {
    BackendChoice::File {
        root: PathBuf::from(root),
    }
}

fn check(
    settings: TrackingSettings,
    env: TrackingEnv,
    choice: BackendChoice,
    source: UriSource,
    warnings: usize,
) {
    let got =
        select_backend(&settings, &env).unwrap_or_else(|e| panic!("{settings:?} {env:?}: {e}"));
    assert_eq!(got.choice, choice, "{settings:?} {env:?}");
    assert_eq!(got.source, source, "{settings:?} {env:?}");
    assert_eq!(got.warnings.len(), warnings, "{:?}", got.warnings);
}

#[test]
fn precedence() {
    check(
        settings(),
        env(None, None),
        file("/proj/mlruns"),
        UriSource::Default,
        0,
    );
    let mut configured = settings();
    configured.uri = Some("http://tracking:5000/".into());
    check(
        configured.clone(),
        env(None, None),
        BackendChoice::Rest {
            url: "http://tracking:5000".into(),
            token: None,
        },
        UriSource::Config,
        0,
    );
    // MLFLOW_TRACKING_URI overrides the config, as in MLflow.
    check(
        configured.clone(),
        env(Some("file:./runs"), None),
        file("/cwd/./runs"),
        UriSource::Environment,
        0,
    );
    check(
        configured.clone(),
        env(Some("  "), None),
        BackendChoice::Rest {
            url: "http://tracking:5000".into(),
            token: None,
        },
        UriSource::Config,
        0,
    );
    // A disabled stage wins over everything.
    let mut disabled = configured;
    disabled.enabled = false;
    check(
        disabled,
        env(Some("http://x:1"), None),
        BackendChoice::Disabled,
        UriSource::StageDisabled,
        0,
    );
    // Relative config paths are relative to ROOT.
    let mut relative = settings();
    relative.uri = Some("file:track/mlruns".into());
    check(
        relative,
        env(None, None),
        file("/proj/track/mlruns"),
        UriSource::Config,
        0,
    );
}

#[test]
fn uri_forms() {
    let cases = [
        ("file:///abs/ml%20runs", file("/abs/ml runs")),
        ("file://localhost/abs", file("/abs")),
        ("file:/abs", file("/abs")),
        ("/plain/path", file("/plain/path")),
        ("rel", file("/cwd/rel")),
        (
            "https://host/prefix",
            BackendChoice::Rest {
                url: "https://host/prefix".into(),
                token: None,
            },
        ),
    ];
    for (uri, choice) in cases {
        check(
            settings(),
            env(Some(uri), None),
            choice,
            UriSource::Environment,
            0,
        );
    }
    let with_token = select_backend(&settings(), &env(Some("http://h:1"), Some("tok"))).unwrap();
    assert_eq!(
        with_token.choice,
        BackendChoice::Rest {
            url: "http://h:1".into(),
            token: Some(Secret("tok".into()))
        }
    );
}

#[test]
fn malformed_uris_are_typed_errors() {
    for bad in [
        "sqlite:///mlflow.db",
        "databricks:",
        "file://otherhost/x",
        "file:",
        "http://",
        "http://h:notaport",
        "file:/a%zz",
        "C:\\mlruns",
        "s3://bucket/x",
        "file:/x\0y",
    ] {
        let err = select_backend(&settings(), &env(Some(bad), None)).expect_err(bad);
        assert_eq!(err.kind(), "malformed_uri", "{bad}: {err}");
    }
}

#[test]
fn azureml_builds_the_workspace_uri_with_a_token() {
    let mut s = settings();
    s.azure = azure_complete();
    s.uri = Some("http://ignored:1".into());
    let got = select_backend(&s, &env(None, Some("secret-token"))).unwrap();
    assert_eq!(got.source, UriSource::AzureMl);
    assert_eq!(
        got.choice,
        BackendChoice::Rest {
            url: "https://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/0000-sub/resourceGroups/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/resume-ner-ws".into(),
            token: Some(Secret("secret-token".into())),
        }
    );
    assert!(
        !format!("{got:?}").contains("secret-token"),
        "Debug must not show the token"
    );
    assert!(!got.choice.describe().contains("secret-token"));
}

#[test]
fn azureml_without_credentials_warns_and_falls_back_to_the_file_store() {
    let mut s = settings();
    s.azure = azure_complete();
    check(
        s.clone(),
        env(None, None),
        file("/proj/mlruns"),
        UriSource::AzureMlFallback,
        1,
    );
    s.azure.subscription_id = None;
    s.azure.region = Some(" ".into());
    let got = select_backend(&s, &env(None, Some("tok"))).unwrap();
    assert_eq!(got.choice, file("/proj/mlruns"));
    assert!(
        got.warnings[0].contains("subscription_id") && got.warnings[0].contains("region"),
        "{:?}",
        got.warnings
    );
    // An azureml:// URI in the environment without a token: the same fallback.
    check(
        settings(),
        env(
            Some("azureml://westeurope.api.azureml.ms/mlflow/v1.0/x"),
            None,
        ),
        file("/proj/mlruns"),
        UriSource::AzureMlFallback,
        1,
    );
    // Resource names that would change the URL's shape are rejected, not spliced in.
    let mut evil = settings();
    evil.azure = azure_complete();
    evil.azure.workspace_name = Some("ws/../../other".into());
    assert_eq!(
        select_backend(&evil, &env(None, Some("tok")))
            .unwrap_err()
            .kind(),
        "malformed_uri"
    );
}

proptest! {
    #![proptest_config(trainctl_core::testing::seeded_config(256, module_path!()))]
    /// Never a panic, whatever the URI.
    #[test]
    fn any_uri_gives_a_choice_or_a_typed_error(uri in any::<String>()) {
        match select_backend(&settings(), &env(Some(&uri), None)) {
            Ok(selection) => prop_assert!(selection.choice != BackendChoice::Disabled),
            Err(e) => prop_assert_eq!(e.kind(), "malformed_uri"),
        }
    }
}
