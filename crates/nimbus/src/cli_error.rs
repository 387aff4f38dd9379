//! CLI errors and how they print: manifest problems as rendered diagnostics (file,
//! line, key, hint), everything else as a message with its `Caused by:` chain.

use std::process::ExitCode;

use nimbus_core::manifest::ManifestErrors;

pub enum CliError {
    Manifest(ManifestErrors),
    Other(anyhow::Error),
}

impl From<ManifestErrors> for CliError {
    fn from(e: ManifestErrors) -> Self {
        Self::Manifest(e)
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        Self::Other(e)
    }
}

/// Exit codes: 1 for a failed command, 2 for bad usage (clap), 3 for an invalid manifest.
impl CliError {
    pub fn report(self) -> ExitCode {
        match self {
            CliError::Manifest(errors) => {
                eprintln!("{:?}", miette::Report::new(errors));
                ExitCode::from(3)
            }
            CliError::Other(err) => {
                eprintln!("error: {err}");
                for cause in err.chain().skip(1) {
                    eprintln!("  Caused by: {cause}");
                }
                ExitCode::FAILURE
            }
        }
    }
}
