//! The logging settings of every berth server's configuration file
//! (`[log]` in `berth serve`'s, `berth mirror`'s and `berth bot`'s), one
//! type so the three parse, validate and default them alike. Settings
//! only: the binary installs the subscriber.

use serde::Deserialize;

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `berth_registry=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct File {
        #[serde(default)]
        log: LogConfig,
    }

    fn parse(text: &str) -> Result<LogConfig, String> {
        serde_json::from_str::<File>(text)
            .map(|f| f.log)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parses_defaults_and_refuses_unknown_values() {
        assert_eq!(parse("{}").unwrap(), LogConfig::default());
        let json = parse(r#"{"log":{"format":"json"}}"#).unwrap();
        assert_eq!(
            (json.format, json.level.as_str()),
            (LogFormat::Json, "info")
        );
        assert!(
            parse(r#"{"log":{"format":"xml"}}"#)
                .unwrap_err()
                .contains("human")
        );
        assert!(
            parse(r#"{"log":{"fromat":"json"}}"#)
                .unwrap_err()
                .contains("fromat")
        );
    }
}
