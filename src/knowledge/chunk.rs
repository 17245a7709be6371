//! Text into chunks of about `target` tokens that respect the text's structure: a chunk
//! is filled with whole paragraphs; a paragraph too large for one is cut between
//! sentences, a sentence too large between words (a run without spaces between
//! characters, never inside one). Each chunk after the first starts with the last
//! `overlap` tokens' worth of words of the one before, so a passage cut in two is still
//! whole in one of them. A chunk never spans two headings; it may span PDF pages, and
//! then says on which it starts and ends.

use tiktoken_rs::CoreBPE;

use crate::knowledge::extract::Section;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub position: i32,
    pub content: String,
    pub token_count: i32,
    pub page: Option<u32>,
    pub page_end: Option<u32>,
    pub heading: Option<String>,
}

pub struct Chunker {
    target: usize,
    overlap: usize,
    /// OpenAI's `cl100k_base`, shipped inside tiktoken-rs (nothing is downloaded).
    bpe: &'static CoreBPE,
}

/// A piece of text that stays whole in a chunk, with its token count.
struct Unit {
    text: String,
    tokens: usize,
    page: Option<u32>,
    /// Whether it begins a paragraph (joined with a blank line, else a space).
    paragraph_start: bool,
}

impl Chunker {
    pub fn new(target_tokens: usize, overlap_tokens: usize) -> Chunker {
        Chunker {
            target: target_tokens.max(16),
            overlap: overlap_tokens.min(target_tokens / 2),
            bpe: tiktoken_rs::cl100k_base_singleton(),
        }
    }

    pub fn count_tokens(&self, text: &str) -> usize {
        self.bpe.encode_ordinary(text).len()
    }

    /// The chunks of `sections`, in order.
    pub fn chunks(&self, sections: &[Section]) -> impl Iterator<Item = Chunk> {
        let mut chunks = Vec::new();
        let mut start = 0;
        // Runs of sections under one heading are chunked together.
        while start < sections.len() {
            let heading = &sections[start].heading;
            let end = sections[start..]
                .iter()
                .position(|s| &s.heading != heading)
                .map_or(sections.len(), |n| start + n);
            let units: Vec<Unit> = sections[start..end]
                .iter()
                .flat_map(|s| self.units(s))
                .collect();
            self.pack(units, heading.clone(), &mut chunks);
            start = end;
        }
        chunks.into_iter()
    }

    fn units(&self, section: &Section) -> Vec<Unit> {
        let mut units = Vec::new();
        for paragraph in section.text.split("\n\n").filter(|p| !p.trim().is_empty()) {
            let mut first = true;
            let mut push = |text: &str, tokens: usize| {
                units.push(Unit {
                    text: text.to_string(),
                    tokens,
                    page: section.page,
                    paragraph_start: std::mem::take(&mut first),
                });
            };
            // A token is at least a byte, so a paragraph of at most `target` bytes fits;
            // a longer one is counted by sentences (each piece of text encoded once),
            // and stays whole when their sum fits.
            if paragraph.len() <= self.target {
                push(paragraph, self.count_tokens(paragraph));
                continue;
            }
            let counted: Vec<(&str, usize)> = sentences(paragraph)
                .into_iter()
                .map(|s| (s, self.count_tokens(s)))
                .collect();
            let tokens: usize = counted.iter().map(|(_, n)| n).sum();
            if tokens <= self.target {
                push(paragraph, tokens);
                continue;
            }
            for (sentence, tokens) in counted {
                if tokens <= self.target {
                    push(sentence, tokens);
                    continue;
                }
                for piece in self.split_long(sentence) {
                    let tokens = self.count_tokens(&piece);
                    push(&piece, tokens);
                }
            }
        }
        units
    }

    /// A sentence longer than a chunk, in pieces of whole words (or whole characters,
    /// for text without spaces) of at most `target` tokens.
    fn split_long(&self, sentence: &str) -> Vec<String> {
        let mut pieces = Vec::new();
        let mut current = String::new();
        let mut current_tokens = 0;
        for word in words_or_chars(sentence) {
            let tokens = self.count_tokens(word) + 1;
            if current_tokens + tokens > self.target && !current.is_empty() {
                pieces.push(std::mem::take(&mut current));
                current_tokens = 0;
            }
            current.push_str(word);
            current_tokens += tokens;
        }
        if !current.trim().is_empty() {
            pieces.push(current);
        }
        pieces
            .into_iter()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    }

    /// Fills chunks with units. A chunk's token count is the sum of its units' (and its
    /// overlap's), counted once each: the tokenizer is the costly part of chunking, and
    /// encoding every chunk again to count it exactly would at least double it. Joining
    /// pieces can merge a token or two at their seams, so the sum is a close estimate.
    fn pack(&self, units: Vec<Unit>, heading: Option<String>, chunks: &mut Vec<Chunk>) {
        let mut content = String::new();
        let mut tokens = 0;
        let mut pages: (Option<u32>, Option<u32>) = (None, None);
        let mut has_new_text = false;
        for unit in units {
            if has_new_text && tokens + unit.tokens > self.target {
                let (tail, tail_tokens) = self.tail(&content);
                self.emit(&content, tokens, pages, &heading, chunks);
                pages = (pages.1, pages.1);
                tokens = tail_tokens;
                content = tail;
            }
            if !content.is_empty() {
                content.push_str(if unit.paragraph_start { "\n\n" } else { " " });
            }
            content.push_str(&unit.text);
            tokens += unit.tokens;
            has_new_text = true;
            if pages.0.is_none() {
                pages.0 = unit.page;
            }
            pages.1 = unit.page.or(pages.1);
        }
        if has_new_text {
            self.emit(&content, tokens, pages, &heading, chunks);
        }
    }

    fn emit(
        &self,
        content: &str,
        tokens: usize,
        (page, page_end): (Option<u32>, Option<u32>),
        heading: &Option<String>,
        chunks: &mut Vec<Chunk>,
    ) {
        chunks.push(Chunk {
            position: chunks.len() as i32,
            content: content.to_string(),
            token_count: i32::try_from(tokens).unwrap_or(i32::MAX),
            page,
            page_end: page_end.filter(|end| Some(*end) != page),
            heading: heading.clone(),
        });
    }

    /// The last words of `content` worth about `overlap` tokens, and their count.
    fn tail(&self, content: &str) -> (String, usize) {
        if self.overlap == 0 {
            return (String::new(), 0);
        }
        // Only the end is looked at: splitting the whole chunk into words for its last
        // few dozen would cost as much as the chunk's own packing.
        let words: Vec<&str> = content
            .split_whitespace()
            .rev()
            .take(self.overlap * 2 + 1)
            .collect();
        // A word is about 1.3 tokens in English; count exactly and shrink to fit.
        let mut take = (self.overlap * 3 / 4)
            .clamp(1, words.len().max(1))
            .min(words.len());
        loop {
            let tail = words[..take]
                .iter()
                .rev()
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            let tokens = self.count_tokens(&tail);
            if take <= 1 || tokens <= self.overlap {
                return (tail, tokens);
            }
            take = take * 3 / 4;
        }
    }
}

/// Sentences: cut after `.`, `!`, `?` or `…` followed by white space, and at line breaks.
fn sentences(paragraph: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = paragraph.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end_of_sentence = matches!(c, '.' | '!' | '?' | '…')
            && chars.peek().is_some_and(|(_, next)| next.is_whitespace());
        if end_of_sentence || c == '\n' {
            let end = i + c.len_utf8();
            let sentence = paragraph[start..end].trim();
            if !sentence.is_empty() {
                out.push(sentence);
            }
            start = end;
        }
    }
    let rest = paragraph[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// Words with their following space; a run without spaces longer than 64 characters
/// comes out in pieces of 64 characters.
fn words_or_chars(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive(char::is_whitespace).flat_map(|word| {
        let mut pieces = Vec::new();
        let mut rest = word;
        while rest.chars().count() > 64 {
            let cut = rest.char_indices().nth(64).map_or(rest.len(), |(i, _)| i);
            pieces.push(&rest[..cut]);
            rest = &rest[cut..];
        }
        pieces.push(rest);
        pieces
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str, page: Option<u32>, heading: Option<&str>) -> Section {
        Section {
            text: text.to_string(),
            page,
            heading: heading.map(str::to_string),
        }
    }

    #[test]
    fn long_text_makes_overlapping_chunks_near_the_target() {
        let paragraph =
            "Our team answers every customer within one business day and keeps its promises. ";
        let text = (0..200)
            .map(|i| format!("{paragraph}Paragraph {i}."))
            .collect::<Vec<_>>()
            .join("\n\n");
        let chunker = Chunker::new(500, 75);
        let chunks: Vec<Chunk> = chunker.chunks(&[section(&text, None, None)]).collect();
        assert!(chunks.len() > 5);
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.position, i as i32);
            assert!(
                c.token_count <= 600,
                "chunk {i} has {} tokens",
                c.token_count
            );
        }
        for pair in chunks.windows(2) {
            let tail: Vec<&str> = pair[0].content.split_whitespace().rev().take(5).collect();
            let head: Vec<&str> = pair[1].content.split_whitespace().take(200).collect();
            assert!(
                tail.iter().all(|w| head.contains(w)),
                "the next chunk overlaps"
            );
        }
    }

    #[test]
    fn pages_headings_and_cyrillic_are_kept_whole() {
        let chunker = Chunker::new(40, 6);
        let russian = "Доставка по Москве осуществляется курьером в течение двух дней. ".repeat(20);
        let sections = [
            section(&russian, Some(1), None),
            section("Short page two.", Some(2), None),
            section("Under a heading.", None, Some("Prices")),
        ];
        let chunks: Vec<Chunk> = chunker.chunks(&sections).collect();
        assert_eq!(chunks[0].page, Some(1));
        assert!(
            chunks
                .iter()
                .any(|c| c.page_end == Some(2) || c.page == Some(2))
        );
        let last = chunks.last().unwrap();
        assert_eq!(last.heading.as_deref(), Some("Prices"));
        assert_eq!(last.content, "Under a heading.");
        for c in &chunks {
            assert!(c.content.split_whitespace().all(|w| !w.is_empty()));
        }
    }

    #[test]
    fn text_without_spaces_is_cut_between_characters() {
        let chunker = Chunker::new(30, 0);
        let blob = "я".repeat(5000);
        let chunks: Vec<Chunk> = chunker.chunks(&[section(&blob, None, None)]).collect();
        assert!(chunks.len() > 1);
        let letters: usize = chunks
            .iter()
            .map(|c| c.content.chars().filter(|ch| *ch == 'я').count())
            .sum();
        assert_eq!(letters, 5000, "nothing lost, nothing cut mid-character");
    }
}
