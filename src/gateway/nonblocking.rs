//! The one match every non-blocking socket call needs: retry when a signal
//! interrupted it, report "would block" as `None`, pass other errors on.

use std::io;

/// Runs `op` until it is not `Interrupted`; `Ok(None)` means it would block.
pub fn retry<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<Option<T>> {
    loop {
        match op() {
            Ok(value) => return Ok(Some(value)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_interrupted_and_folds_would_block() {
        let mut results = vec![
            Err(io::ErrorKind::Interrupted.into()),
            Err(io::ErrorKind::Interrupted.into()),
            Ok(7),
        ];
        assert_eq!(retry(|| results.remove(0)).ok(), Some(Some(7)));
        assert!(matches!(
            retry(|| Err::<usize, _>(io::ErrorKind::WouldBlock.into())),
            Ok(None)
        ));
        let reset = retry(|| Err::<usize, _>(io::ErrorKind::ConnectionReset.into()));
        assert_eq!(
            reset.err().map(|e| e.kind()),
            Some(io::ErrorKind::ConnectionReset)
        );
    }
}
