//! Command-line flags and their environment variables.

use clap::{CommandFactory, FromArgMatches, Parser};
use std::{ffi::OsString, net::SocketAddr, path::PathBuf, time::Duration};

/// A layer of the demo that `--disable` can turn off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LayerName {
    /// Timing, metrics and Server-Timing.
    Timing,
    /// The per-client rate limit on `/api/*`.
    Ratelimit,
    /// The global concurrency limit (`/api/slow` keeps its own).
    Concurrency,
    /// Compression of responses and decoding of request bodies (`gzip` is accepted as an alias).
    #[value(alias = "gzip")]
    Compression,
    /// Batching of `/api/items/{id}` lookups (one query per request when off).
    Batch,
    /// The response cache on `/api/items` and `/api/report`.
    Cache,
}

/// The tower-kit demo server: every tower-kit layer in front of a small JSON API.
#[derive(Debug, Clone, Parser)]
#[command(name = "demo-server", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// How long to let in-flight requests finish after Ctrl-C or SIGTERM before closing the remaining connections,
    /// e.g. `10s`, `500ms`, `1m`.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Layers to turn off, comma-separated (e.g. `compression,ratelimit`); all are on by default.
    #[arg(long, env = "DISABLE", value_enum, value_delimiter = ',')]
    pub disable: Vec<LayerName>,

    /// How logs are written to stderr: `text` (coloured only on a terminal) or `json` (one object per line, for
    /// log shippers).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: crate::observability::LogFormat,

    /// A TOML file of settings whose keys are the long flag names without `--` (`rate-limit = 50`,
    /// `disable = ["compression"]`). Flags and environment variables take precedence over it.
    #[arg(long, env = "CONFIG")]
    pub config: Option<PathBuf>,

    /// Timing layer flags.
    #[command(flatten)]
    pub timing: crate::timing::Args,

    /// Response cache flags.
    #[command(flatten)]
    pub cache: crate::cache::Args,

    /// Item lookups: SQLite and request batching.
    #[command(flatten)]
    pub batch: crate::batch::Args,

    /// Rate-limit flags.
    #[command(flatten)]
    pub ratelimit: crate::ratelimit::Args,

    /// Concurrency-limit flags.
    #[command(flatten)]
    pub concurrency: crate::concurrency::Args,

    /// Compression flags.
    #[command(flatten)]
    pub compression: crate::compression::Args,

    /// Connection flags: header and idle timeouts, connection cap, listen backlog, HTTP/2 settings.
    #[command(flatten)]
    pub server: crate::server::Args,
}

impl Config {
    /// The defaults, as if started with no flags and no environment (used by tests).
    pub fn for_tests() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            drain_timeout: Duration::from_secs(10),
            disable: Vec::new(),
            log_format: crate::observability::LogFormat::Text,
            config: None,
            timing: crate::timing::Args::default(),
            cache: crate::cache::Args::default(),
            batch: crate::batch::Args::for_tests(),
            ratelimit: crate::ratelimit::Args::default(),
            concurrency: crate::concurrency::Args::default(),
            compression: crate::compression::Args::default(),
            server: crate::server::Args::default(),
        }
    }
}

impl Config {
    /// Whether a layer is on.
    pub fn enabled(&self, layer: LayerName) -> bool {
        !self.disable.contains(&layer)
    }

    /// Reads the flags of this process, its environment, and the `--config` file if one is named.
    pub fn load() -> Result<Self, clap::Error> {
        Self::load_from(std::env::args_os())
    }

    /// [`load`](Self::load) with the given command line (the first item is the program name). Precedence: flags,
    /// then environment variables, then the config file, then the defaults.
    pub fn load_from(
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Result<Self, clap::Error> {
        let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let first = Config::try_parse_from(&args)?;
        if let Some(path) = &first.config {
            let text = std::fs::read_to_string(path)
                .map_err(|e| config_error(format!("{}: {e}", path.display())))?;
            args.extend(config_file_args(&text, &args)?);
        }
        let mut config = Config::from_arg_matches(&Config::command().try_get_matches_from(args)?)?;
        if !config.enabled(LayerName::Batch) {
            config.batch.batch_lookups = false;
        }
        config.cache.enabled = config.enabled(LayerName::Cache);
        Ok(config)
    }
}

fn config_error(message: String) -> clap::Error {
    Config::command().error(clap::error::ErrorKind::InvalidValue, message)
}

/// Flags for the settings of a TOML config file that neither the command line nor the environment sets.
fn config_file_args(text: &str, command_line: &[OsString]) -> Result<Vec<OsString>, clap::Error> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| config_error(format!("config file: {e}")))?;
    let command = Config::command();
    let mut out = Vec::new();
    for (key, value) in table {
        // A flag's old spelling (a hidden alias such as `gzip-min-size`) is a key too.
        let arg = command
            .get_arguments()
            .find(|a| {
                a.get_long() == Some(key.as_str())
                    || a.get_all_aliases()
                        .is_some_and(|aliases| aliases.contains(&key.as_str()))
            })
            .ok_or_else(|| config_error(format!("config file: unknown setting `{key}`")))?;
        let flag = format!("--{key}");
        let spellings: Vec<String> = arg
            .get_long()
            .into_iter()
            .chain(arg.get_all_aliases().unwrap_or_default())
            .map(|long| format!("--{long}"))
            .collect();
        let on_command_line = command_line.iter().any(|a| {
            a.to_str().is_some_and(|a| {
                spellings
                    .iter()
                    .any(|f| a == f || a.starts_with(&format!("{f}=")))
            })
        });
        let in_environment = arg
            .get_env()
            .is_some_and(|env| std::env::var_os(env).is_some());
        if on_command_line || in_environment {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => {
                items.into_iter().map(scalar).collect::<Result<Vec<_>, _>>()
            }
            other => scalar(other).map(|v| vec![v]),
        }
        .map_err(|e| config_error(format!("config file: `{key}`: {e}")))?;
        for v in values {
            out.push(OsString::from(format!("{flag}={v}")));
        }
    }
    Ok(out)
}

fn scalar(value: toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("{} values are not supported", other.type_str())),
    }
}

/// Parses `250ms`, `10s`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 250ms, 10s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit `{unit}` in `{text}`: use ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn config_file_fills_what_flags_and_environment_do_not_set() {
        let dir = std::env::temp_dir().join(format!("demo-config-{}.toml", std::process::id()));
        std::fs::write(
            &dir,
            "listen = \"127.0.0.1:4999\"\nrate-limit = 7\ndisable = [\"compression\", \"batch\"]\ndrain-timeout = \"3s\"\n",
        )
        .unwrap();
        let path = dir.to_str().unwrap();
        let c = Config::load_from(["demo-server", "--config", path, "--rate-limit", "9"]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:4999".parse().unwrap());
        assert_eq!(
            c.ratelimit.rate_limit.get(),
            9,
            "the flag wins over the file"
        );
        assert_eq!(c.drain_timeout, Duration::from_secs(3));
        assert!(!c.enabled(LayerName::Compression) && !c.enabled(LayerName::Batch));
        assert!(!c.batch.batch_lookups, "--disable batch turns batching off");
        assert!(c.enabled(LayerName::Timing));

        std::fs::write(&dir, "no-such-setting = 1\n").unwrap();
        let err = Config::load_from(["demo-server", "--config", path]).unwrap_err();
        assert!(err.to_string().contains("no-such-setting"), "{err}");
        std::fs::write(&dir, "listen = [").unwrap();
        assert!(Config::load_from(["demo-server", "--config", path]).is_err());
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn disable_takes_a_list() {
        let c = Config::load_from(["demo-server", "--disable", "timing,ratelimit"]).unwrap();
        assert_eq!(c.disable, vec![LayerName::Timing, LayerName::Ratelimit]);
        assert!(c.cache.enabled);
        let c = Config::load_from(["demo-server", "--disable", "cache"]).unwrap();
        assert!(!c.cache.enabled);
        assert!(Config::load_from(["demo-server", "--disable", "everything"]).is_err());
    }

    #[test]
    fn compression_flags_keep_their_gzip_spellings_as_aliases() {
        let c = Config::load_from([
            "demo-server",
            "--compression-min-size",
            "2000",
            "--compression-gzip-level",
            "5",
            "--compression-max-decoded",
            "4096",
        ])
        .unwrap();
        assert_eq!(c.compression.compression_min_size, 2000);
        assert_eq!(c.compression.compression_gzip_level, 5);
        assert_eq!(c.compression.compression_max_decoded, 4096);
        let old = Config::load_from([
            "demo-server",
            "--gzip-min-size",
            "2000",
            "--gzip-level=5",
            "--gzip-max-decoded",
            "4096",
            "--disable",
            "gzip",
        ])
        .unwrap();
        assert_eq!(old.compression.compression_min_size, 2000);
        assert_eq!(old.compression.compression_gzip_level, 5);
        assert_eq!(old.compression.compression_max_decoded, 4096);
        assert_eq!(old.disable, vec![LayerName::Compression]);
        let c = Config::load_from(["demo-server", "--disable", "compression"]).unwrap();
        assert!(!c.enabled(LayerName::Compression));
        // The old spelling works in a config file too, and the new one on the command line still wins over it.
        let file = std::env::temp_dir().join(format!("demo-alias-{}.toml", std::process::id()));
        std::fs::write(&file, "gzip-min-size = 3000\ngzip-level = 4\n").unwrap();
        let path = file.to_str().unwrap();
        let c = Config::load_from([
            "demo-server",
            "--config",
            path,
            "--compression-gzip-level",
            "9",
        ])
        .unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(c.compression.compression_min_size, 3000);
        assert_eq!(c.compression.compression_gzip_level, 9);
        let help = Config::command().render_long_help().to_string();
        assert!(help.contains("--compression-min-size"), "{help}");
        assert!(
            !help.contains("--gzip-"),
            "the old spellings are hidden: {help}"
        );
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }
}
