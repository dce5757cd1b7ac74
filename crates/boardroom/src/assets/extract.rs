//! Text extraction for search (PDF, plain text, CSV, DOCX) and thumbnails
//! for images. Pure functions over bytes, run on the blocking pool by the
//! processing worker; every one is bounded against hostile input.
//!
//! ```
//! use boardroom::assets::extract::{extract_text, Limits};
//! let limits = Limits { max_text_bytes: 1 << 20, max_image_dimension: 4096, thumbnail_size: 64 };
//! let text = extract_text("text/plain", b"Quarterly budget", &limits).unwrap();
//! assert_eq!(text.text, "Quarterly budget");
//! ```

use std::io::{Cursor, Read};

/// Bounds of the processing steps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most text kept, and most bytes a compressed part may inflate to.
    pub max_text_bytes: usize,
    /// Images wider or taller are not decoded.
    pub max_image_dimension: u32,
    /// Longest edge of a thumbnail.
    pub thumbnail_size: u32,
}

/// Text found in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The text (at most `max_text_bytes`, cut at a character boundary).
    pub text: String,
    /// Pages, for documents that have them.
    pub page_count: Option<i32>,
}

/// Whether `mime` has text to extract.
pub fn has_text(mime: &str) -> bool {
    matches!(
        mime,
        "application/pdf"
            | "text/plain"
            | "text/csv"
            | "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    )
}

/// Whether `mime` gets a thumbnail.
pub fn has_thumbnail(mime: &str) -> bool {
    matches!(
        mime,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp"
    )
}

/// Extracts the text of a `mime` file; the error says why it could not.
pub fn extract_text(mime: &str, bytes: &[u8], limits: &Limits) -> Result<Extracted, String> {
    let (text, page_count) = match mime {
        "application/pdf" => pdf(bytes)?,
        "text/plain" | "text/csv" => (String::from_utf8_lossy(bytes).into_owned(), None),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => {
            (docx(bytes, limits.max_text_bytes)?, None)
        }
        other => return Err(format!("no text extraction for {other}")),
    };
    Ok(Extracted {
        text: truncate(text.replace('\0', ""), limits.max_text_bytes),
        page_count,
    })
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn pdf(bytes: &[u8]) -> Result<(String, Option<i32>), String> {
    let document =
        lopdf::Document::load_mem(bytes).map_err(|e| format!("not a readable PDF: {e}"))?;
    let pages = i32::try_from(document.get_pages().len()).ok();
    // pdf-extract panics on some malformed files: contain it.
    let text = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(bytes))
        .map_err(|_| "the PDF text could not be read".to_owned())?
        .map_err(|e| format!("the PDF text could not be read: {e}"))?;
    Ok((text, pages))
}

/// The text of `word/document.xml`, reading at most `max` inflated bytes
/// (a zip bomb stops there).
fn docx(bytes: &[u8], max: usize) -> Result<String, String> {
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("not a DOCX: {e}"))?;
    let part = archive
        .by_name("word/document.xml")
        .map_err(|e| format!("not a DOCX (word/document.xml: {e})"))?;
    let mut xml = Vec::new();
    // Markup is several times the text: allow 8x the text bound.
    let bound = u64::try_from(max.saturating_mul(8)).unwrap_or(u64::MAX);
    part.take(bound)
        .read_to_end(&mut xml)
        .map_err(|e| format!("the DOCX could not be inflated: {e}"))?;
    Ok(xml_text(&String::from_utf8_lossy(&xml)))
}

/// The character data of WordprocessingML: paragraphs become lines, tags go.
fn xml_text(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len() / 4);
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        out.push_str(&unescape(&rest[..start]));
        let Some(end) = rest[start..].find('>') else {
            break;
        };
        let tag = &rest[start + 1..start + end];
        if tag == "/w:p" || tag.starts_with("w:br") || tag.starts_with("w:tab") {
            out.push(if tag.starts_with("w:tab") { '\t' } else { '\n' });
        }
        rest = &rest[start + end + 1..];
    }
    out.trim().to_owned()
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// A PNG thumbnail (longest edge `thumbnail_size`) of an image, decoding
/// only images within `max_image_dimension` and a bounded allocation.
pub fn thumbnail(bytes: &[u8], limits: &Limits) -> Result<Vec<u8>, String> {
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("unreadable image: {e}"))?;
    let mut bounds = image::Limits::default();
    bounds.max_image_width = Some(limits.max_image_dimension);
    bounds.max_image_height = Some(limits.max_image_dimension);
    bounds.max_alloc = Some(512 << 20);
    reader.limits(bounds);
    let decoded = reader
        .decode()
        .map_err(|e| format!("the image could not be decoded: {e}"))?;
    let small = decoded.thumbnail(limits.thumbnail_size, limits.thumbnail_size);
    let mut out = Cursor::new(Vec::new());
    small
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| format!("the thumbnail could not be encoded: {e}"))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docx_paragraphs_become_lines() {
        let xml = r#"<w:document><w:body><w:p><w:r><w:t>Board &amp; budget</w:t></w:r></w:p><w:p><w:r><w:t>Second</w:t></w:r></w:p></w:body></w:document>"#;
        assert_eq!(xml_text(xml), "Board & budget\nSecond");
    }

    #[test]
    fn text_is_cut_at_a_character_boundary() {
        assert_eq!(truncate("ééé".into(), 3), "é");
    }
}
