//! Manifest diagnostics: each error carries the manifest's file name, its text and
//! the byte span of the offending key or value, so it renders (through miette) with
//! file, line and column, and a hint such as the closest valid key.

use std::ops::Range;
use std::sync::Arc;

use miette::{Diagnostic, NamedSource, SourceSpan};

/// One problem in a manifest.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
#[diagnostic(code(nimbus::manifest))]
pub struct ManifestError {
    pub message: String,
    #[source_code]
    pub source_code: NamedSource<Arc<str>>,
    #[label("{label}")]
    pub span: Option<SourceSpan>,
    pub label: String,
    #[help]
    pub help: Option<String>,
    /// 1-based line and column of the span's start, for plain-text renderings.
    pub line: usize,
    pub column: usize,
}

/// Every problem found in one manifest, in file order.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{}", summary(.errors))]
pub struct ManifestErrors {
    pub file: String,
    #[related]
    pub errors: Vec<ManifestError>,
}

fn summary(errors: &[ManifestError]) -> String {
    match errors {
        [one] => format!(
            "invalid manifest {}:{}:{}: {}",
            one.source_code.name(),
            one.line,
            one.column,
            one.message
        ),
        many => format!("invalid manifest: {} problems", many.len()),
    }
}

impl ManifestErrors {
    /// One line per problem: `nimbus.toml:3:1: message (help)`. Used where no
    /// terminal renderer is available, e.g. in admin API responses.
    pub fn to_plain(&self) -> String {
        self.errors
            .iter()
            .map(|e| {
                let mut line = format!("{}:{}:{}: {}", self.file, e.line, e.column, e.message);
                if let Some(help) = &e.help {
                    line.push_str(&format!(" ({help})"));
                }
                line
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Collects errors against one manifest text.
pub(crate) struct Reporter {
    file: String,
    text: Arc<str>,
    errors: Vec<ManifestError>,
}

impl Reporter {
    pub fn new(file: &str, text: &str) -> Self {
        Self {
            file: file.to_string(),
            text: Arc::from(text),
            errors: Vec::new(),
        }
    }

    pub fn error(
        &mut self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        label: impl Into<String>,
        help: Option<String>,
    ) {
        let (line, column) = span
            .as_ref()
            .map(|s| line_col(&self.text, s.start))
            .unwrap_or((1, 1));
        self.errors.push(ManifestError {
            message: message.into(),
            source_code: NamedSource::new(self.file.clone(), self.text.clone()),
            span: span.map(|s| SourceSpan::from(s.start..s.end.max(s.start))),
            label: label.into(),
            help,
            line,
            column,
        });
    }

    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(&self.text, offset)
    }

    pub fn finish(mut self) -> Result<(), ManifestErrors> {
        if self.errors.is_empty() {
            return Ok(());
        }
        self.errors.sort_by_key(|e| (e.line, e.column));
        Err(ManifestErrors {
            file: self.file,
            errors: self.errors,
        })
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit_once('\n')
        .map_or(before, |(_, tail)| tail)
        .chars()
        .count()
        + 1;
    (line, column)
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let text = "a\nbc\nd";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 3), (2, 2));
        assert_eq!(line_col(text, 5), (3, 1));
    }

    #[test]
    fn closest_finds_typos_only() {
        let keys = ["source", "memory_mb", "timeout"];
        assert_eq!(closest("memry_mb", keys), Some("memory_mb"));
        assert_eq!(closest("timeot", keys), Some("timeout"));
        assert_eq!(closest("banana", keys), None);
    }
}
