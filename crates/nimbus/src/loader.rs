//! Reading an app from a folder: its `nimbus.toml`, the build commands, and the
//! component files, with every problem reported against the manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use nimbus_core::api::DeployRequest;
use nimbus_core::manifest::{Manifest, ManifestErrors};

use crate::cli_error::CliError;

pub const MANIFEST: &str = "nimbus.toml";

/// An app read from disk, ready to deploy.
pub struct LoadedApp {
    pub manifest: Manifest,
    /// Function -> (digest, bytes).
    pub components: BTreeMap<String, (String, Vec<u8>)>,
}

impl LoadedApp {
    pub fn deploy_request(&self) -> DeployRequest {
        DeployRequest {
            manifest_file: self.manifest.file().to_string(),
            manifest: self.manifest.text().to_string(),
            components: self
                .components
                .iter()
                .map(|(f, (digest, _))| (f.clone(), digest.clone()))
                .collect(),
        }
    }
}

/// The manifest path for a folder or a file argument.
pub fn manifest_path(dir: &Path) -> PathBuf {
    if dir.is_file() {
        dir.to_path_buf()
    } else {
        dir.join(MANIFEST)
    }
}

pub fn read_manifest(path: &Path) -> Result<Manifest, CliError> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read manifest `{}`", path.display()))?;
    Ok(Manifest::parse(&path.display().to_string(), &text)?)
}

/// Runs each function's `build` command in the manifest's folder, showing progress.
pub fn run_builds(manifest: &Manifest, dir: &Path) -> anyhow::Result<()> {
    let mut seen = Vec::new();
    for function in manifest.app.functions.values() {
        let Some(build) = &function.build else {
            continue;
        };
        // Functions often share one workspace build: run each command once.
        if seen.contains(build) {
            continue;
        }
        seen.push(build.clone());
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("template"),
        );
        bar.set_message(format!("building `{}`: {build}", function.name));
        bar.enable_steady_tick(Duration::from_millis(120));
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(build)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run build command `{build}`"))?;
        bar.finish_and_clear();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow::bail!(
                "build of function `{}` failed ({}): `{build}`\n{}",
                function.name,
                output.status,
                tail.join("\n")
            );
        }
        eprintln!("built `{}` ({build})", function.name);
    }
    Ok(())
}

/// Reads every function's component; errors point at its `source` key.
pub fn load_components(manifest: Manifest, dir: &Path) -> Result<LoadedApp, ManifestErrors> {
    let mut components = BTreeMap::new();
    for function in manifest.app.functions.values() {
        let path = dir.join(&function.source);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) => {
                let help = function
                    .build
                    .as_ref()
                    .map(|b| format!("build it first: `{b}` (`nimbus up` runs the build)"));
                return Err(manifest.source_error(
                    &function.name,
                    format!("cannot read component `{}`: {err}", path.display()),
                    help,
                ));
            }
        };
        if let Err(err) = nimbus_compute::check_component_header(&bytes) {
            return Err(manifest.source_error(
                &function.name,
                format!("`{}` is not a WebAssembly component", function.source),
                Some(err.to_string()),
            ));
        }
        let digest = nimbus_data::sha256_hex(&bytes);
        components.insert(function.name.clone(), (digest, bytes));
    }
    Ok(LoadedApp {
        manifest,
        components,
    })
}
