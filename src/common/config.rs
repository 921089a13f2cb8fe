//! The one shape of a refused setting: which section, which field, which rule.

use std::borrow::Cow;

/// A setting is out of range, or two settings break a rule between them. Nothing was started
/// or changed by the call that returned it.
///
/// Displayed as `section.field: rule`, e.g. `transport.inbound_idle: must exceed outbound_idle`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{section}.{field}: {rule}")]
pub struct ConfigError {
    /// The config section (`protocol`, `transport`, `wal`, `store`, `chaos`, `node`, `agent`,
    /// `scenario`).
    pub section: &'static str,
    /// The offending field (for a rule between fields, the one to change first).
    pub field: &'static str,
    /// What it must satisfy, with the value given where that helps.
    pub rule: Cow<'static, str>,
}

impl ConfigError {
    /// A refused `section.field`.
    pub fn new(
        section: &'static str,
        field: &'static str,
        rule: impl Into<Cow<'static, str>>,
    ) -> Self {
        ConfigError {
            section,
            field,
            rule: rule.into(),
        }
    }

    /// `Err` of [`ConfigError::new`], for `return` in a `validate()`.
    pub fn fail<T>(
        section: &'static str,
        field: &'static str,
        rule: impl Into<Cow<'static, str>>,
    ) -> Result<T, Self> {
        Err(Self::new(section, field, rule))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_section_field_and_rule() {
        let e = ConfigError::new("transport", "read_timeout", "must be above zero");
        assert_eq!(e.to_string(), "transport.read_timeout: must be above zero");
        let e = ConfigError::new("wal", "segment_bytes", format!("{} is too small", 3));
        assert_eq!(e.to_string(), "wal.segment_bytes: 3 is too small");
    }
}
