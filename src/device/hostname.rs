//! The hostname, from the machine config.

use crate::config::{validate_hostname, ConfigError};

use super::sys::{Sys, SysError};

/// Linux's limit (`HOST_NAME_MAX`): shorter than what RFC 1123 allows, so the
/// config's validation alone is not enough.
pub const MAX_HOSTNAME: usize = 64;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostnameError {
    #[error("hostname: {0}")]
    Invalid(#[from] ConfigError),
    #[error("hostname `{0}` is longer than Linux's {MAX_HOSTNAME} characters")]
    TooLong(String),
    #[error("setting the hostname: {0}")]
    Set(#[from] SysError),
}

/// Validate and set the hostname (`config.hostname`).
pub fn set_hostname(sys: &dyn Sys, name: &str) -> Result<(), HostnameError> {
    validate_hostname(name)?;
    if name.len() > MAX_HOSTNAME {
        return Err(HostnameError::TooLong(name.to_owned()));
    }
    sys.sethostname(name)?;
    tracing::info!(hostname = name, "hostname set");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sys::{Call, Errno, RecordingSys};

    #[test]
    fn bad_names_are_refused_before_the_kernel_sees_them() {
        let sys = RecordingSys::new();
        assert!(matches!(
            set_hostname(&sys, "bad_name"),
            Err(HostnameError::Invalid(_))
        ));
        assert!(matches!(
            set_hostname(&sys, ""),
            Err(HostnameError::Invalid(_))
        ));
        let long = format!("{}.{}", "a".repeat(40), "b".repeat(40));
        assert!(matches!(
            set_hostname(&sys, &long),
            Err(HostnameError::TooLong(_))
        ));
        assert!(sys.calls().is_empty());
        sys.fail("sethostname", "edge-1", Errno::EPERM);
        assert!(matches!(
            set_hostname(&sys, "edge-1"),
            Err(HostnameError::Set(_))
        ));
    }

    #[test]
    fn sets_the_name() {
        let sys = RecordingSys::new();
        set_hostname(&sys, "edge-7.site").unwrap();
        assert_eq!(sys.calls(), [Call::SetHostname("edge-7.site".into())]);
    }
}
