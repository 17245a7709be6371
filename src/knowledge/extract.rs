//! What a file is, judged by its bytes, and the text in it. Every parser here faces
//! files from the internet: none recurses on the input's nesting, archives are read
//! within a size cap, and a parser that panics on a hostile file is caught and reported
//! as an unreadable file.

use std::io::{Cursor, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The formats the knowledge base reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
    Docx,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Docx => "docx",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Format::Text => "text/plain",
            Format::Markdown => "text/markdown",
            Format::Html => "text/html",
            Format::Pdf => "application/pdf",
            Format::Docx => {
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            }
        }
    }
}

/// A run of text with where it came from: the PDF page, the heading in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub text: String,
    pub page: Option<u32>,
    pub heading: Option<String>,
}

/// Why a file gave no text. The message is shown to users as the asset's error.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("the PDF could not be read (it is damaged or not a PDF)")]
    Pdf,
    #[error("the PDF is encrypted; upload it without a password")]
    EncryptedPdf,
    #[error("the DOCX file could not be read (it is damaged or not a Word document)")]
    Docx,
    #[error("the DOCX file's text is larger than 64 MiB")]
    DocxTooLarge,
    #[error("the file is not valid UTF-8 text")]
    NotUtf8,
    #[error("the file contains no text")]
    NoText,
}

/// The largest `word/document.xml` read from a DOCX (a zip bomb stops here).
const MAX_DOCX_XML: u64 = 64 * 1024 * 1024;
/// How far into a text file its kind is judged.
const SNIFF_WINDOW: usize = 2048;

/// The file's format by its content; `filename` only tells Markdown from plain text.
/// `None` for anything else (images, archives, binaries, other encodings).
pub fn sniff(bytes: &[u8], filename: Option<&str>) -> Option<Format> {
    if bytes.starts_with(b"%PDF-") {
        return Some(Format::Pdf);
    }
    if bytes.starts_with(b"PK\x03\x04") {
        let archive = zip::ZipArchive::new(Cursor::new(bytes)).ok()?;
        return archive
            .index_for_name("word/document.xml")
            .map(|_| Format::Docx);
    }
    let text = std::str::from_utf8(strip_bom(bytes)).ok()?;
    if text.contains('\0') {
        return None;
    }
    let head: String = text
        .chars()
        .take(SNIFF_WINDOW)
        .collect::<String>()
        .to_ascii_lowercase();
    let trimmed = head.trim_start();
    if trimmed.starts_with("<!doctype html")
        || trimmed.starts_with("<html")
        || ["<html", "<head>", "<body"]
            .iter()
            .any(|t| head.contains(t))
    {
        return Some(Format::Html);
    }
    let markdown_name = filename.is_some_and(|f| {
        let f = f.to_ascii_lowercase();
        f.ends_with(".md") || f.ends_with(".markdown")
    });
    if markdown_name || head.lines().any(|l| markdown_heading(l).is_some()) {
        return Some(Format::Markdown);
    }
    Some(Format::Text)
}

/// The file's text in sections. CPU work: call it off the async runtime.
pub fn extract(format: Format, bytes: &[u8]) -> Result<Vec<Section>, ExtractError> {
    let sections = match format {
        Format::Text => vec![Section {
            text: normalize(utf8(bytes)?),
            page: None,
            heading: None,
        }],
        Format::Markdown => markdown(utf8(bytes)?),
        Format::Html => guarded(|| Ok(html(utf8(bytes)?)), ExtractError::NotUtf8)?,
        Format::Pdf => guarded(|| pdf(bytes), ExtractError::Pdf)?,
        Format::Docx => guarded(|| docx(bytes), ExtractError::Docx)?,
    };
    let sections: Vec<Section> = sections
        .into_iter()
        .filter(|s| !s.text.trim().is_empty())
        .collect();
    if sections.is_empty() {
        return Err(ExtractError::NoText);
    }
    Ok(sections)
}

/// Runs a parser, turning a panic inside a crate into `on_panic`.
fn guarded<T>(
    parse: impl FnOnce() -> Result<T, ExtractError>,
    on_panic: ExtractError,
) -> Result<T, ExtractError> {
    catch_unwind(AssertUnwindSafe(parse)).unwrap_or(Err(on_panic))
}

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

fn utf8(bytes: &[u8]) -> Result<&str, ExtractError> {
    std::str::from_utf8(strip_bom(bytes)).map_err(|_| ExtractError::NotUtf8)
}

/// Line endings to `\n`, runs of blanks to one space, no more than one empty line in a
/// row: paragraphs stay apart, layout noise goes.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_lines = 0;
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        let mut words = line
            .split(|c: char| c.is_whitespace())
            .filter(|w| !w.is_empty());
        match words.next() {
            None => blank_lines += 1,
            Some(first) => {
                if !out.is_empty() {
                    out.push_str(if blank_lines > 0 { "\n\n" } else { "\n" });
                }
                blank_lines = 0;
                out.push_str(first);
                for word in words {
                    out.push(' ');
                    out.push_str(word);
                }
            }
        }
    }
    out
}

/// `# Title` → `Title` (ATX headings, levels 1 to 6).
fn markdown_heading(line: &str) -> Option<&str> {
    let hashes = line.bytes().take_while(|b| *b == b'#').count();
    if !(1..=6).contains(&hashes) {
        return None;
    }
    let rest = &line[hashes..];
    rest.starts_with(' ')
        .then(|| rest.trim().trim_end_matches('#').trim())
        .filter(|h| !h.is_empty())
}

fn markdown(text: &str) -> Vec<Section> {
    let mut sections = Vec::new();
    let mut heading: Option<String> = None;
    let mut body = String::new();
    for line in text.lines() {
        if let Some(title) = markdown_heading(line) {
            push_section(&mut sections, &mut body, None, heading.take());
            heading = Some(title.to_string());
            continue;
        }
        body.push_str(line);
        body.push('\n');
    }
    push_section(&mut sections, &mut body, None, heading);
    sections
}

fn push_section(
    sections: &mut Vec<Section>,
    body: &mut String,
    page: Option<u32>,
    heading: Option<String>,
) {
    let text = normalize(body);
    body.clear();
    if !text.is_empty() {
        sections.push(Section {
            text,
            page,
            heading,
        });
    }
}

/// Visible text: the tree is walked by its open/close edges (no recursion), the content
/// of script, style, noscript and template skipped, blocks kept apart, headings made
/// section headings.
fn html(text: &str) -> Vec<Section> {
    // The HTML5 tree builder checks its stack of open elements for every tag, so a
    // document nested thousands deep costs it quadratic time: such a file (never a real
    // page) is read by the flat scan below instead.
    if nesting_estimate(text) > MAX_TREE_DEPTH {
        return vec![Section {
            text: normalize(&html_flat(text)),
            page: None,
            heading: None,
        }];
    }
    html_tree(text)
}

/// Deeper than this, an HTML file is read without building its tree.
const MAX_TREE_DEPTH: usize = 256;

const VOID_ELEMENTS: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
];

/// The tag name after `<` at `rest` (lower case), if it is one.
fn tag_name(rest: &str) -> String {
    rest.chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The deepest nesting of open tags, counted in one pass over the text.
fn nesting_estimate(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices('<') {
        match bytes.get(i + 1) {
            Some(b'/') => depth = depth.saturating_sub(1),
            Some(c)
                if c.is_ascii_alphabetic()
                    && !VOID_ELEMENTS.contains(&tag_name(&text[i + 1..]).as_str()) =>
            {
                depth += 1;
                deepest = deepest.max(depth);
            }
            _ => {}
        }
    }
    deepest
}

/// Text without tags in one linear scan: comments and the content of script, style,
/// noscript and template dropped, block tags made paragraph breaks, entities decoded.
fn html_flat(text: &str) -> String {
    const SKIPPED: &[&str] = &["script", "style", "noscript", "template", "head"];
    const BLOCKS: &[&str] = &[
        "p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
    ];
    let mut out = String::with_capacity(text.len() / 2);
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&decode_entities(&rest[..open]));
        rest = &rest[open..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            continue;
        }
        let closing = rest.starts_with("</");
        let name = tag_name(&rest[if closing { 2 } else { 1 }..]);
        let end = rest.find('>').map_or(rest.len(), |e| e + 1);
        rest = &rest[end..];
        if !closing && SKIPPED.contains(&name.as_str()) {
            let close = rest
                .match_indices("</")
                .find(|(at, _)| tag_name(&rest[at + 2..]) == name)
                .map(|(at, _)| at);
            rest = close.map_or("", |at| {
                let tail = &rest[at..];
                tail.find('>').map_or("", |e| &tail[e + 1..])
            });
        } else if BLOCKS.contains(&name.as_str()) {
            out.push_str("\n\n");
        }
    }
    out.push_str(&decode_entities(rest));
    out
}

/// The common named entities and numeric ones; anything else stays as written.
fn decode_entities(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('&') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest[..rest.len().min(12)].find(';');
        let decoded = end.and_then(|end| {
            let name = &rest[1..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

fn html_tree(text: &str) -> Vec<Section> {
    use ego_tree::iter::Edge;
    use scraper::Node;

    const SKIPPED: &[&str] = &["script", "style", "noscript", "template", "head"];
    const BLOCKS: &[&str] = &[
        "p",
        "div",
        "br",
        "li",
        "ul",
        "ol",
        "tr",
        "table",
        "section",
        "article",
        "header",
        "footer",
        "nav",
        "aside",
        "main",
        "blockquote",
        "pre",
        "dd",
        "dt",
        "dl",
        "hr",
        "figure",
        "figcaption",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "td",
        "th",
    ];
    let is_heading = |name: &str| matches!(name, "h1" | "h2" | "h3" | "h4" | "h5" | "h6");

    let document = scraper::Html::parse_document(text);
    let mut sections = Vec::new();
    let mut body = String::new();
    let mut heading: Option<String> = None;
    let mut heading_text: Option<String> = None;
    let mut skipping = 0usize;
    for edge in document.tree.root().traverse() {
        match edge {
            Edge::Open(node) => match node.value() {
                Node::Element(element) => {
                    let name = element.name();
                    if SKIPPED.contains(&name) {
                        skipping += 1;
                    } else if skipping == 0 && is_heading(name) {
                        heading_text = Some(String::new());
                    } else if skipping == 0 && BLOCKS.contains(&name) {
                        body.push_str("\n\n");
                    }
                }
                Node::Text(t) if skipping == 0 => match heading_text.as_mut() {
                    Some(h) => h.push_str(t),
                    None => body.push_str(t),
                },
                _ => {}
            },
            Edge::Close(node) => {
                if let Node::Element(element) = node.value() {
                    let name = element.name();
                    if SKIPPED.contains(&name) {
                        skipping = skipping.saturating_sub(1);
                    } else if skipping == 0 && is_heading(name) {
                        if let Some(title) = heading_text.take() {
                            push_section(&mut sections, &mut body, None, heading.take());
                            let title = normalize(&title);
                            heading = (!title.is_empty()).then_some(title);
                        }
                    } else if skipping == 0 && BLOCKS.contains(&name) {
                        body.push_str("\n\n");
                    }
                }
            }
        }
    }
    push_section(&mut sections, &mut body, None, heading);
    sections
}

/// Text per page, the page number kept.
fn pdf(bytes: &[u8]) -> Result<Vec<Section>, ExtractError> {
    let document = lopdf::Document::load_mem(bytes).map_err(|_| ExtractError::Pdf)?;
    if document.is_encrypted() {
        return Err(ExtractError::EncryptedPdf);
    }
    let mut sections = Vec::new();
    for number in document.get_pages().keys() {
        // A page whose content cannot be decoded is skipped; the others still count.
        if let Ok(text) = document.extract_text(&[*number]) {
            let mut text = text;
            push_section(&mut sections, &mut text, Some(*number), None);
        }
    }
    Ok(sections)
}

/// Paragraphs and headings (`Heading1`…`Heading9`, `Title`) from `word/document.xml`,
/// read as a stream of XML events.
fn docx(bytes: &[u8]) -> Result<Vec<Section>, ExtractError> {
    use quick_xml::events::Event;

    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|_| ExtractError::Docx)?;
    let entry = archive
        .by_name("word/document.xml")
        .map_err(|_| ExtractError::Docx)?;
    if entry.size() > MAX_DOCX_XML {
        return Err(ExtractError::DocxTooLarge);
    }
    let mut xml = Vec::new();
    entry
        .take(MAX_DOCX_XML + 1)
        .read_to_end(&mut xml)
        .map_err(|_| ExtractError::Docx)?;
    if xml.len() as u64 > MAX_DOCX_XML {
        return Err(ExtractError::DocxTooLarge);
    }

    let mut reader = quick_xml::Reader::from_reader(xml.as_slice());
    let mut buffer = Vec::new();
    let mut sections = Vec::new();
    let mut body = String::new();
    let mut heading: Option<String> = None;
    let mut paragraph = String::new();
    let mut style: Option<String> = None;
    let mut in_text = false;
    loop {
        match reader.read_event_into(&mut buffer) {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => match e.name().as_ref() {
                "w:p" => {
                    paragraph.clear();
                    style = None;
                }
                "w:pStyle" => {
                    style = e
                        .attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == "w:val")
                        .map(|a| a.value.to_string());
                }
                "w:t" => in_text = true,
                "w:tab" => paragraph.push('\t'),
                "w:br" => paragraph.push('\n'),
                _ => {}
            },
            Ok(Event::Text(t)) if in_text => {
                let text: &str = t.as_ref();
                paragraph.push_str(text);
            }
            Ok(Event::GeneralRef(r)) if in_text => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    paragraph.push(c);
                }
                let name: &str = r.as_ref();
                paragraph.push_str(match name {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                });
            }
            Ok(Event::End(e)) => match e.name().as_ref() {
                "w:t" => in_text = false,
                "w:p" => {
                    let is_heading = style
                        .as_deref()
                        .is_some_and(|s| s.starts_with("Heading") || s == "Title");
                    if is_heading {
                        let title = normalize(&paragraph);
                        if !title.is_empty() {
                            push_section(&mut sections, &mut body, None, heading.take());
                            heading = Some(title);
                        }
                    } else {
                        body.push_str(&paragraph);
                        body.push_str("\n\n");
                    }
                    paragraph.clear();
                }
                _ => {}
            },
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(_) => return Err(ExtractError::Docx),
        }
        buffer.clear();
    }
    push_section(&mut sections, &mut body, None, heading);
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_judged_by_content() {
        assert_eq!(sniff(b"%PDF-1.7 ...", Some("x.txt")), Some(Format::Pdf));
        assert_eq!(sniff(b"hello", Some("x.pdf")), Some(Format::Text));
        assert_eq!(sniff(b"\xEF\xBB\xBFhello", None), Some(Format::Text));
        assert_eq!(sniff(b"# Title\n\ntext", None), Some(Format::Markdown));
        assert_eq!(sniff(b"plain", Some("notes.MD")), Some(Format::Markdown));
        assert_eq!(sniff(b"  <!DOCTYPE html><p>x", None), Some(Format::Html));
        assert_eq!(
            sniff(b"<div><body>x</body></div>", None),
            Some(Format::Html)
        );
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n", Some("a.txt")), None);
        assert_eq!(sniff(b"text\0with nul", None), None);
        assert_eq!(sniff(&[0xff, 0xfe, b'h', 0], None), None, "UTF-16");
        assert_eq!(sniff(b"PK\x03\x04 not a zip", None), None);
    }

    #[test]
    fn normalize_keeps_paragraphs_and_drops_layout_noise() {
        assert_eq!(
            normalize("  a \t b\r\n\r\n\r\n\nc\nd  "),
            "a b\n\nc\nd".to_string()
        );
    }

    #[test]
    fn markdown_headings_become_sections() {
        let sections = markdown("intro\n# One\nfirst\n## Two ##\nsecond\n#not a heading");
        let headings: Vec<Option<&str>> = sections.iter().map(|s| s.heading.as_deref()).collect();
        assert_eq!(headings, [None, Some("One"), Some("Two")]);
        assert_eq!(sections[2].text, "second\n#not a heading");
    }

    #[test]
    fn html_keeps_visible_text_only_and_survives_deep_nesting() {
        let sections = html(
            "<html><head><title>t</title><style>p{}</style></head><body><script>x()</script>\
             <h2>Hours</h2><p>Open <b>daily</b> &amp; late</p><template>hidden</template></body></html>",
        );
        assert_eq!(sections.len(), 1);
        assert_eq!(sections[0].heading.as_deref(), Some("Hours"));
        assert_eq!(sections[0].text, "Open daily & late");

        let deep = format!(
            "<p>top &amp; tail</p>{}deep <script>x</script>text{}",
            "<div>".repeat(100_000),
            "</div>".repeat(100_000)
        );
        let sections = html(&deep);
        assert_eq!(sections[0].text, "top & tail\n\ndeep text");
    }

    #[test]
    fn broken_files_are_readable_errors() {
        assert!(matches!(
            extract(Format::Pdf, b"%PDF-1.4 junk"),
            Err(ExtractError::Pdf)
        ));
        assert!(matches!(
            extract(Format::Docx, b"PK\x03\x04junk"),
            Err(ExtractError::Docx)
        ));
        assert!(matches!(
            extract(Format::Text, b" \n\t "),
            Err(ExtractError::NoText)
        ));
        assert!(matches!(
            extract(Format::Text, b"\xff\xfe"),
            Err(ExtractError::NotUtf8)
        ));
    }
}
