//! The admin API's bearer token: generated into the data dir at first start,
//! readable only by its owner, and read from there by the CLI.

use std::io;
use std::path::Path;

pub const TOKEN_FILE: &str = "admin-token";

/// The secret that signs object URLs.
pub const URL_KEY_FILE: &str = "url-signing-key";

/// Reads the token in `data_dir`, creating one if there is none.
pub fn load_or_create_token(data_dir: &Path) -> io::Result<String> {
    load_or_create_secret(data_dir, TOKEN_FILE)
}

/// Reads the secret (256 random bits, hex) in `data_dir/file`, creating it if
/// there is none; only the owner can read it.
pub fn load_or_create_secret(data_dir: &Path, file: &str) -> io::Result<String> {
    let path = data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    nimbus_data::write_atomic(&path, token.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(token)
}

/// Compares tokens in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_token(dir.path()).unwrap();
        let b = load_or_create_token(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert!(same_token(&a, &b));
        assert!(!same_token(&a, "x"));
    }
}
