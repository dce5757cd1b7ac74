//! What a file is, judged from its first bytes (never from the client's
//! claim or file name), and which client file names are acceptable.
//!
//! ```
//! use boardroom::assets::sniff::{sniff, check_file_name};
//! assert_eq!(sniff(b"%PDF-1.7\n...", "x.pdf"), Some("application/pdf".into()));
//! assert_eq!(sniff(b"name,age\nada,36\n", "people.csv"), Some("text/csv".into()));
//! // An executable called report.pdf is not a PDF (nor text).
//! let elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0";
//! assert!(!matches!(sniff(elf, "report.pdf").as_deref(), Some("application/pdf" | "text/plain")));
//! assert!(check_file_name("../../etc/passwd").is_err());
//! assert!(check_file_name("Minutes 2026-11.pdf").is_ok());
//! ```

use crate::error::ApiError;

/// Bytes looked at to decide the type.
pub const SNIFF_BYTES: usize = 8192;

/// The MIME type of a file starting with `head` (at most [`SNIFF_BYTES`]),
/// or `None` when it is neither a known binary format nor text.
pub fn sniff(head: &[u8], file_name: &str) -> Option<String> {
    if let Some(kind) = infer::get(head) {
        let mime = kind.mime_type();
        // A .docx is a zip; infer names the Office formats by their parts.
        return Some(mime.to_owned());
    }
    if is_text(head) {
        let csv = file_name.to_ascii_lowercase().ends_with(".csv") && looks_like_csv(head);
        return Some(if csv { "text/csv" } else { "text/plain" }.to_owned());
    }
    None
}

/// UTF-8 without NUL or other control bytes than whitespace (a multi-byte
/// character cut at the end of `head` is allowed).
fn is_text(head: &[u8]) -> bool {
    if head.is_empty() {
        return true;
    }
    let valid = match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(error) => error.error_len().is_none() && head.len() - error.valid_up_to() < 4,
    };
    valid
        && !head
            .iter()
            .any(|&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0c))
}

fn looks_like_csv(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let Some(first) = lines.next() else {
        return false;
    };
    let columns = first.matches(',').count();
    columns > 0
        && lines
            .take(5)
            .all(|l| l.matches(',').count() >= columns.min(1))
}

/// A client file name is kept only as metadata (Content-Disposition), never
/// as a storage key; still, one that tries to name a path is refused.
pub fn check_file_name(name: &str) -> Result<(), ApiError> {
    let bad = name.is_empty()
        || name.chars().count() > 255
        || name.contains(['/', '\\', '\0'])
        || name.chars().any(char::is_control)
        || name == "."
        || name.contains("..")
        || name.trim().is_empty();
    if bad {
        return Err(ApiError::invalid(
            "file",
            "the file name must be 1 to 255 characters without path separators, `..` or control characters",
        ));
    }
    Ok(())
}
