//! A real S3-compatible server for the bucket tests (`props/bucket.rs`): moto's server mode
//! (`moto[server]`, pinned, in the same venv as MLflow: `.ci/run` installs both) on
//! 127.0.0.1, started and stopped by the test itself, one bucket per test.
//! `TRAINCTL_SKIP_MOTO=1` skips; a missing install FAILS the test with the command that
//! installs it.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const MOTO_VERSION: &str = "5.2.6";

/// A running moto server with one empty bucket. Stopped on drop.
pub struct Moto {
    child: Child,
    pub endpoint: String,
    pub bucket: String,
}

fn how_to_install() -> String {
    format!(
        "The bucket tests need moto {MOTO_VERSION} (server mode) in the test venv:\n  \
         .venv/bin/pip install 'moto[server]=={MOTO_VERSION}'\n\
         (`bash .ci/run` does this). TRAINCTL_SKIP_MOTO=1 skips these tests."
    )
}

impl Moto {
    /// Starts a server and creates the bucket `bucket`; `None` when the user asked to skip.
    pub fn start(test: &str, bucket: &str) -> Option<Moto> {
        if std::env::var("TRAINCTL_SKIP_MOTO").is_ok_and(|v| v == "1") {
            let _ = writeln!(std::io::stderr(), "{test}: skipped (TRAINCTL_SKIP_MOTO=1)");
            return None;
        }
        let python = super::mlflow::python(test)?;
        let probe = Command::new(&python)
            .args(["-c", "import moto, boto3, flask; print(moto.__version__)"])
            .output()
            .expect("run python");
        let version = String::from_utf8_lossy(&probe.stdout).trim().to_string();
        assert!(
            probe.status.success() && version == MOTO_VERSION,
            "{test}: {} has no moto[server] {MOTO_VERSION} (found {version:?}): {}\n{}",
            python.display(),
            String::from_utf8_lossy(&probe.stderr),
            how_to_install()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{test}: moto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let made = Command::new(&python)
            .args([
                "-c",
                "import boto3, sys; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', \
                 aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket=sys.argv[2])",
                &moto.endpoint,
                bucket,
            ])
            .output()
            .expect("create bucket");
        assert!(
            made.status.success(),
            "{test}: creating the bucket failed: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        Some(moto)
    }

    /// The server and credentials: the environment variable trainctl reads each from, the
    /// object_store config key the test's own client takes it as, and the value.
    fn settings_table(&self) -> [(&'static str, &'static str, String); 5] {
        [
            ("AWS_ENDPOINT_URL", "aws_endpoint", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "aws_access_key_id", "test".into()),
            (
                "AWS_SECRET_ACCESS_KEY",
                "aws_secret_access_key",
                "test".into(),
            ),
            ("AWS_ALLOW_HTTP", "aws_allow_http", "true".into()),
            ("AWS_REGION", "aws_region", "us-east-1".into()),
        ]
    }

    /// The environment trainctl reads the server and credentials from.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.settings_table()
            .into_iter()
            .map(|(var, _, v)| (var, v))
            .collect()
    }

    /// The same settings as the object_store crate's config keys (for the test's own client).
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        self.settings_table()
            .into_iter()
            .map(|(_, key, v)| (key, v))
            .collect()
    }

    /// A client of the bucket through trainctl's own Objects port.
    pub fn objects(&self) -> trainctl::store::cloud::CloudObjects {
        let settings = self.settings();
        let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        trainctl::store::cloud::CloudObjects::connect_with(
            &trainctl::paths::BucketUrl {
                scheme: "s3".into(),
                bucket: self.bucket.clone(),
                prefix: String::new(),
            },
            &pairs,
        )
        .expect("client")
    }

    /// `s3://<bucket>/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
