//! The variable reader: typed lookups in which an empty or blank value counts as unset and
//! every error names its variable (a secret's value is never echoed).

use std::str::FromStr;
use std::time::Duration;

use axum::http::Uri;
use secrecy::SecretString;

use super::{ConfigError, DEFAULT_LOG_FILTER};

/// A share in 0..1.
pub(super) fn unit(v: &f64) -> Result<(), &'static str> {
    (v.is_finite() && (0.0..=1.0).contains(v))
        .then_some(())
        .ok_or("must be between 0 and 1")
}

/// A positive count.
pub(super) fn positive_usize(v: &usize) -> Result<(), &'static str> {
    (*v > 0).then_some(()).ok_or("must be positive")
}

/// Typed access to the variables, each error naming its variable.
pub(super) struct Env<'a>(
    pub(super) &'a dyn Fn(&'static str) -> Result<Option<String>, ConfigError>,
);

impl Env<'_> {
    /// The value, with empty and blank counting as unset.
    pub(super) fn string(&self, var: &'static str) -> Result<Option<String>, ConfigError> {
        Ok((self.0)(var)?
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty()))
    }

    pub(super) fn secret(&self, var: &'static str) -> Result<Option<SecretString>, ConfigError> {
        Ok(self.string(var)?.map(SecretString::from))
    }

    pub(super) fn parse_or<T, V>(
        &self,
        var: &'static str,
        default: T,
        valid: V,
    ) -> Result<T, ConfigError>
    where
        T: FromStr,
        V: Fn(&T) -> Result<(), &'static str>,
    {
        let Some(raw) = self.string(var)? else {
            return Ok(default);
        };
        let value = raw
            .parse::<T>()
            .map_err(|_| ConfigError::new(var, format!("cannot parse {raw:?}")))?;
        valid(&value).map_err(|why| ConfigError::new(var, format!("{raw:?}: {why}")))?;
        Ok(value)
    }

    /// An optional value: None when unset.
    pub(super) fn parse_opt<T: FromStr>(
        &self,
        var: &'static str,
    ) -> Result<Option<T>, ConfigError> {
        self.string(var)?
            .map(|raw| {
                raw.parse::<T>()
                    .map_err(|_| ConfigError::new(var, format!("cannot parse {raw:?}")))
            })
            .transpose()
    }

    pub(super) fn bool_or(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.string(var)? {
            None => Ok(default),
            Some(raw) => match raw.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::new(
                    var,
                    format!("{raw:?} is not a boolean (true/false, 1/0, yes/no, on/off)"),
                )),
            },
        }
    }

    pub(super) fn choice<T: Copy>(
        &self,
        var: &'static str,
        default: T,
        options: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let Some(raw) = self.string(var)? else {
            return Ok(default);
        };
        options
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&raw))
            .map(|(_, value)| *value)
            .ok_or_else(|| {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                ConfigError::new(var, format!("{raw:?} is not one of {}", names.join(", ")))
            })
    }

    pub(super) fn log_filter(&self, var: &'static str) -> Result<String, ConfigError> {
        let filter = self
            .string(var)?
            .unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned());
        tracing_subscriber::EnvFilter::try_new(&filter)
            .map_err(|e| ConfigError::new(var, format!("{filter:?}: {e}")))?;
        Ok(filter)
    }

    pub(super) fn url(&self, var: &'static str) -> Result<Option<String>, ConfigError> {
        let Some(raw) = self.string(var)? else {
            return Ok(None);
        };
        let uri: Uri = raw
            .parse()
            .map_err(|_| ConfigError::new(var, format!("{raw:?} is not a URL")))?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        if !scheme_ok || uri.authority().is_none() {
            return Err(ConfigError::new(
                var,
                format!("{raw:?} must be an absolute http:// or https:// URL"),
            ));
        }
        Ok(Some(raw.trim_end_matches('/').to_owned()))
    }

    /// Whole seconds, positive.
    pub(super) fn secs(&self, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.parse_or(var, default, |v: &u64| {
            (*v > 0).then_some(()).ok_or("must be positive")
        })
        .map(Duration::from_secs)
    }

    pub(super) fn url_or(&self, var: &'static str, default: &str) -> Result<String, ConfigError> {
        Ok(self.url(var)?.unwrap_or_else(|| default.to_owned()))
    }
}
