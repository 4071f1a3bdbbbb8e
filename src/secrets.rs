//! Random secrets (tokens, session ids, one-time codes) and secret files at rest: they
//! are created readable by their owner only, and one that group or others may read or
//! write is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use std::io::Write;
use std::path::Path;

/// `n` random bytes from the OS-seeded CSPRNG, base64url without padding.
pub fn random_b64(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(&buf)
}

/// Creates `path` holding a fresh 32-byte token, mode 0600, and returns the token.
pub fn create_token_file(path: &Path) -> std::io::Result<String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let token = random_b64(32);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(mut f) => {
            f.write_all(token.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            tracing::info!(path = %path.display(), "created a new secret token file");
            Ok(token)
        }
        // Another process created it first: use theirs (if it is private).
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            check_private(path).map_err(std::io::Error::other)?;
            Ok(std::fs::read_to_string(path)?.trim().to_string())
        }
        Err(e) => Err(e),
    }
}

/// Refuses a secret file (signing key, admin or peer token) that its group or others
/// may read or write: `Err` says which file, its mode and how to fix it. Not checked
/// where the platform has no Unix modes.
pub fn check_private(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta =
            std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} is open to its group or others (mode {mode:04o}); a secret must be readable by its owner only: chmod 600 {}",
                path.display(),
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Creates `dir` (and its parents) for secrets: mode 0700 where it is new.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Writes `contents` to a new file readable by its owner only (tests that need a
/// secret file the gateway accepts).
#[cfg(test)]
pub fn write_private(path: &Path, contents: &str) {
    std::fs::write(path, contents).expect("write a secret file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    }
}

/// Constant-time equality for secrets.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn token_files_are_created_private_and_open_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/admin.token");
        let token = create_token_file(&p).unwrap();
        assert_eq!(mode(&p), 0o600);
        assert!(check_private(&p).is_ok());
        assert_eq!(
            create_token_file(&p).unwrap(),
            token,
            "an existing file is used"
        );
        for open in [0o644, 0o640, 0o604, 0o620] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(open)).unwrap();
            let e = check_private(&p).unwrap_err();
            assert!(
                e.contains("chmod 600") && e.contains(&format!("{open:04o}")),
                "{e}"
            );
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(check_private(&p).is_ok(), "read-only for the owner is fine");
    }

    #[test]
    fn private_dirs_are_0700() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/keys");
        create_private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
    }
}
