//! What a failed local filesystem operation is called, for operators: the archive's file sink
//! and the file checkpoint store label their errors the same way, in metrics and `/readyz`.

use std::io::ErrorKind;

/// The label of a filesystem error: `no_space`, `read_only`, `io_error` (EIO: the device
/// failed), `permission`, or `file` for anything else.
pub fn error_type(error: &std::io::Error) -> &'static str {
    match error.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => "no_space",
        ErrorKind::ReadOnlyFilesystem => "read_only",
        ErrorKind::PermissionDenied => "permission",
        _ if error.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => "io_error",
        _ => "file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;

    fn errno(code: Errno) -> std::io::Error {
        std::io::Error::from_raw_os_error(code.raw_os_error())
    }

    #[test]
    fn filesystem_errors_are_labelled_by_what_the_operator_must_fix() {
        assert_eq!(error_type(&errno(Errno::NOSPC)), "no_space");
        assert_eq!(error_type(&errno(Errno::DQUOT)), "no_space");
        assert_eq!(error_type(&errno(Errno::ROFS)), "read_only");
        assert_eq!(error_type(&errno(Errno::IO)), "io_error");
        assert_eq!(error_type(&errno(Errno::ACCESS)), "permission");
        assert_eq!(error_type(&errno(Errno::NOENT)), "file");
    }
}
